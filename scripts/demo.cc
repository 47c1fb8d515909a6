// `demo [--out DIR]`: the same as `convert --demo [--out DIR]` (kept for older scripts).
#include <string>

#include "scripts/cli.h"
#include "scripts/convert_demo.h"

int main(int argc, char** argv) {
  CLI::App app{"The FSDP -> TP conversion demo (same as convert --demo).", "demo"};
  std::string out;
  app.add_option("--out", out, "leave OUT/fsdp and OUT/tp behind");
  return dcpp::cli::Run(app, argc, argv, [&] { return dcpp::cli::RunDemo(dcpp::cli::UserPath(out)); });
}
