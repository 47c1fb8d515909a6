// export_safetensors: writes any checkpoint dcpp reads (dcpp or PyTorch DCP in any layout, or
// safetensors) as Hugging Face safetensors shards plus model.safetensors.index.json, in
// bounded memory.
//
//   bazel run //scripts:export_safetensors -- SRC DST [--max-shard-size 5GB]
//       [--memory-budget 256MiB] [--dtype bf16 [--dtype '*norm*=fp32']] [--overwrite]
//       [--no-verify] [--quiet]
//
// Prints each shard file with its size, the bytes entries it skipped (safetensors holds only
// tensors), then "exported N tensors (...) into K shards in DST ...".
// Exit codes: 0 exported, 1 error (nothing written; DST as it was), 2 usage.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "core/base/error.h"
#include "core/storage/open.h"
#include "core/tools/dtype_cast.h"
#include "core/tools/safetensors_export.h"
#include "scripts/cli.h"

namespace {

using Clock = std::chrono::steady_clock;

// Sizes as Hugging Face writes them ("5GB", "500MB": powers of ten), or anything ParseBytes
// reads ("512M", "4GiB", "1073741824").
int64_t ParseSize(const std::string& text) {
  const std::pair<const char*, double> decimal[] = {{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}};
  for (const auto& [unit, scale] : decimal) {
    const size_t n = std::strlen(unit);
    if (text.size() <= n || text.compare(text.size() - n, n, unit) != 0) continue;
    const std::string number = text.substr(0, text.size() - n);
    char* end = nullptr;
    const double v = std::strtod(number.c_str(), &end);
    if (*end != '\0' || !(v > 0) || !std::isfinite(v * scale) || v * scale < 1 ||
        !(v * scale < 9223372036854775808.0)) {  // 2^63: beyond int64
      throw dcpp::cli::UsageError("cannot read '" + text + "' as a positive size (e.g. 5GB, 500MB, 2GiB)");
    }
    return static_cast<int64_t>(v * scale);
  }
  return dcpp::cli::ParseBytes(text);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Export any checkpoint dcpp reads (dcpp, PyTorch DCP, safetensors) as Hugging Face "
               "safetensors shards with an index.", "export_safetensors"};
  std::string src, dst, shard = "5GB", budget = "256MiB";
  bool quiet = false;
  dcpp::SafetensorsExportOptions opt;
  app.add_option("SRC", src, "checkpoint to read: any checkpoint dcpp reads (a dcpp or PyTorch DCP folder, safetensors, or torch.save files)")->required();
  app.add_option("DST", dst, "folder to write the shards and model.safetensors.index.json to")->required();
  app.add_option("--max-shard-size", shard, "tensor data per shard at most, e.g. 5GB, 500MB, 2GiB")
      ->capture_default_str();
  app.add_option("--memory-budget", budget, "bytes of buffers at most, e.g. 64M, 1G")->capture_default_str();
  app.add_option("--dtype", opt.dtype_casts, dcpp::kDtypeRulesHelp);
  app.add_flag("--overwrite", opt.overwrite, "replace safetensors files already in DST");
  app.add_flag("--wait-for-lock", opt.wait_for_lock, "wait while another export writes into DST (default: fail at once)");
  app.add_flag("--no-verify", [&](int64_t) { opt.verify_checksums = false; }, "skip source checksums");
  app.add_flag("-q,--quiet", quiet, "print only the summary line");

  return dcpp::cli::Run(app, argc, argv, [&] {
    opt.max_shard_bytes = ParseSize(shard);
    opt.memory_budget = dcpp::cli::ParseBytes(budget);
    try {
      dcpp::DtypeCasts::Parse(opt.dtype_casts);
    } catch (const dcpp::Error& e) {
      throw dcpp::cli::UsageError(std::string("--dtype: ") + e.what());
    }
    const std::string from = dcpp::cli::UserPath(src), to = dcpp::cli::UserPath(dst);
    dcpp::cli::ProgressBar bar;
    if (!quiet && dcpp::cli::StderrIsTerminal()) {
      opt.progress = [&bar](int64_t done, int64_t total) { bar.Update(done, total); };
    }
    const auto t0 = Clock::now();
    const auto reader = dcpp::OpenReader(from);
    const dcpp::SafetensorsExportStats st = dcpp::ExportSafetensors(*reader, to, opt);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!quiet) {
      for (const std::string& f : st.files) {
        std::error_code ec;
        const auto size = std::filesystem::file_size(to + "/" + f, ec);
        std::printf("%s  %s\n", f.c_str(), dcpp::cli::HumanBytes(static_cast<double>(size)).c_str());
      }
      std::printf("%s\n", st.index.c_str());
      for (const std::string& k : st.skipped_bytes) {
        std::printf("skipped bytes entry: %s (safetensors holds only tensors)\n", k.c_str());
      }
    }
    std::string checked = st.checksums_verified ? std::to_string(st.chunks_verified) + " source chunks verified"
                          : opt.verify_checksums ? "the source records no checksums"
                                                 : "checksums not verified (--no-verify)";
    if (st.tensors_cast > 0) checked += "; " + std::to_string(st.tensors_cast) + " cast (--dtype)";
    const size_t skipped = st.skipped_bytes.size();
    if (skipped > 0) checked += "; " + std::to_string(skipped) + (skipped == 1 ? " bytes entry" : " bytes entries") + " skipped";
    std::printf("exported %lld tensors (%s) into %zu shard%s in %s in %.2fs; %s\n",
                static_cast<long long>(st.tensors), dcpp::cli::HumanBytes(static_cast<double>(st.total_size)).c_str(),
                st.files.size(), st.files.size() == 1 ? "" : "s", dst.c_str(), secs, checked.c_str());
    for (const std::string& w : st.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    return dcpp::cli::kOk;
  });
}
