// The conversion demo (`convert --demo`): the seeds' MLP saved FSDP-sharded over 2 ranks,
// converted to tensor parallel over 2 ranks with planners/fsdp_to_tp.lua, every value checked.
#pragma once

#include <string>

namespace dcpp::cli {

// Runs the demo in `out` (a fresh temporary folder when empty, removed afterwards; else
// out/fsdp and out/tp are left there). Prints the table and the verdict; returns an exit code.
int RunDemo(const std::string& out);

}  // namespace dcpp::cli
