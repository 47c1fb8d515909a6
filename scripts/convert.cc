// convert: turn a checkpoint into another layout with a Lua conversion planner.
//
//   bazel run //scripts:convert -- SRC DST --planner planners/fsdp_to_tp.lua --world-size 2
//       [--planner-instruction-limit N] [--planner-memory-limit 8G]
//       [--set key=value ...] [--memory-budget 512M] [--dtype bf16 [--dtype '*norm*=fp32']]
//       [--format native|dcp [--compress zstd]]
//       [--overwrite] [--quiet] [--list]
//   bazel run //scripts:convert -- --demo [--out DIR]
//
// Exit codes: 0 converted, 1 conversion error (nothing committed; DST untouched), 2 usage.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/planner/planner.h"
#include "core/storage/dcp/dcp.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/open.h"
#include "core/tools/dtype_cast.h"
#include "core/tools/convert.h"
#include "scripts/cli.h"
#include "scripts/convert_demo.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s.empty() ? "scalar" : s;
}

void PrintTable(const dcpp::ConvertStats& st, bool all) {
  const size_t limit = all ? st.keys.size() : std::min<size_t>(st.keys.size(), 40);
  std::printf("%-40s %-18s %-18s %-14s %s\n", "key", "source", "target", "shape", "bytes");
  for (size_t i = 0; i < limit; ++i) {
    const dcpp::ConvertedKey& k = st.keys[i];
    const std::string name = k.key == k.source ? k.key : k.key + " (from " + k.source + ")";
    std::printf("%-40s %-18s %-18s %-14s %lld\n", name.c_str(), k.source_layout.c_str(),
                k.target_layout.c_str(), k.is_bytes ? "bytes" : ShapeText(k.shape).c_str(),
                static_cast<long long>(k.bytes));
  }
  if (limit < st.keys.size()) std::printf("... and %zu more keys (--list shows all)\n", st.keys.size() - limit);
  for (const std::string& d : st.dropped) std::printf("dropped: %s\n", d.c_str());
  std::map<std::string, int> casts;  // "float32 -> bfloat16" -> keys
  for (const dcpp::ConvertedKey& k : st.keys) {
    if (!k.is_bytes && k.target_dtype != k.dtype) ++casts[k.dtype + " -> " + k.target_dtype];
  }
  for (const auto& [what, n] : casts) std::printf("cast (--dtype): %d key%s %s\n", n, n == 1 ? "" : "s", what.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Convert a checkpoint (dcpp, PyTorch DCP, safetensors or torch.save files) into another layout, as a Lua "
               "planner decides.", "convert"};
  std::string src, dst, out, budget = "1G", format = "native", compress = "none";
  std::vector<std::string> sets;
  bool demo = false, quiet = false, list = false;
  dcpp::ConvertOptions opt;
  app.add_option("SRC", src, "checkpoint to read: a dcpp or PyTorch DCP folder, safetensors, or torch.save files");
  app.add_option("DST", dst, "folder to write the converted checkpoint to");
  app.add_option("--planner", opt.planner,
                 "conversion planner: a Lua file, or an embedded one (planners/fsdp_to_tp.lua, "
                 "planners/to_fsdp.lua)")
      ->capture_default_str();
  app.add_option("--world-size", opt.world_size, "ranks of the target layout")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--set", sets, "planner option key=value (repeatable)");
  app.add_option("--memory-budget", budget, "bytes of buffers at most, e.g. 512M, 4G")->capture_default_str();
  std::string planner_memory = "8G";  // ConvertOptions' default
  app.add_option("--planner-instruction-limit", opt.planner_instruction_limit,
                 "Lua instructions per planner call before the planner is stopped (0 = unlimited)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--planner-memory-limit", planner_memory,
                 "bytes the planner's Lua state may hold, e.g. 8G (0 = unlimited)")
      ->capture_default_str();
  app.add_option("--format", format, "format of DST: native (dcpp) or dcp (PyTorch's, for torch.distributed.checkpoint.load)")
      ->capture_default_str()
      ->check(CLI::IsMember({"native", "dcp"}));
  app.add_option("--compress", compress, "with --format dcp: zstd compresses every item as PyTorch's ZStandard extension does")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "zstd"}));
  app.add_option("--dtype", opt.dtype_casts, dcpp::kDtypeRulesHelp);
  app.add_flag("--overwrite", opt.overwrite, "replace a checkpoint already in DST (kept until the new one commits)");
  app.add_flag("--wait-for-lock", opt.wait_for_lock, "wait while another save or convert writes into DST (default: fail at once)");
  app.add_flag("--no-verify", [&](int64_t) { opt.verify_checksums = false; }, "skip source checksums");
  app.add_flag("-q,--quiet", quiet, "no progress bar or table");
  app.add_flag("--list", list, "list every key in the table");
  app.add_flag("--demo", demo, "run the FSDP -> TP demo on an embedded model");
  app.add_option("--out", out, "with --demo: leave OUT/fsdp and OUT/tp behind");

  return dcpp::cli::Run(app, argc, argv, [&] {
    if (demo) {
      if (!src.empty()) throw dcpp::cli::UsageError("--demo takes no SRC/DST (use --out DIR)");
      return dcpp::cli::RunDemo(dcpp::cli::UserPath(out));
    }
    if (src.empty() || dst.empty()) throw dcpp::cli::UsageError("SRC and DST are required (or --demo)");
    if (!out.empty()) throw dcpp::cli::UsageError("--out goes with --demo");
    for (const std::string& s : sets) {
      const size_t eq = s.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw dcpp::cli::UsageError("--set " + s + ": expected key=value");
      }
      opt.planner_options[s.substr(0, eq)] = s.substr(eq + 1);
    }
    if (compress != "none" && format != "dcp") throw dcpp::cli::UsageError("--compress goes with --format dcp");
    opt.memory_budget = dcpp::cli::ParseBytes(budget);
    try {
      dcpp::DtypeCasts::Parse(opt.dtype_casts);
    } catch (const dcpp::Error& e) {
      throw dcpp::cli::UsageError(std::string("--dtype: ") + e.what());
    }
    if (opt.memory_budget < dcpp::kMinConvertMemoryBudget) {
      throw dcpp::cli::UsageError("--memory-budget " + budget + ": the budget must be at least " +
                                  std::to_string(dcpp::kMinConvertMemoryBudget) + " bytes (8K)");
    }
    opt.planner_memory_limit = planner_memory == "0" ? 0 : dcpp::cli::ParseBytes(planner_memory);
    // A planner file is found from where `bazel run` was started; a name that is no file there
    // may be an embedded planner ("planners/to_fsdp.lua"), looked up as the user wrote it.
    std::error_code ec;
    if (std::filesystem::exists(dcpp::cli::UserPath(opt.planner), ec)) opt.planner = dcpp::cli::UserPath(opt.planner);
    dcpp::cli::ProgressBar bar;
    if (!quiet && dcpp::cli::StderrIsTerminal()) {
      opt.progress = [&bar](int64_t done, int64_t total) { bar.Update(done, total); };
    }
    const auto t0 = Clock::now();
    dcpp::ConvertStats st;
    try {
      const auto reader = dcpp::OpenReader(dcpp::cli::UserPath(src));  // any format
      dcpp::DcpWriteOptions zstd;
      zstd.zstd = true;
      const std::unique_ptr<dcpp::StorageWriter> writer =
          compress == "zstd" ? std::make_unique<dcpp::DcpWriter>(dcpp::cli::UserPath(dst), dcpp::Env::Default(), zstd)
                             : dcpp::OpenWriter(dcpp::cli::UserPath(dst), dcpp::ParseFormat(format));
      st = dcpp::convert(*reader, *writer, opt);
    } catch (const dcpp::UnknownOptionError& e) {
      throw dcpp::cli::UsageError(e.what());  // found before any data moves
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!quiet) PrintTable(st, list);
    for (const std::string& w : st.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::printf("converted %zu keys (%s) from %d to %d ranks into %s (%s format) in %.2fs, %lld source chunks verified\n",
                st.keys.size(), dcpp::cli::HumanBytes(static_cast<double>(st.bytes_written)).c_str(),
                st.source_world_size, opt.world_size, dst.c_str(), format.c_str(), secs,
                static_cast<long long>(st.chunks_verified));
    return dcpp::cli::kOk;
  });
}
