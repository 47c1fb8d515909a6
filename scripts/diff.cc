// diff: compares two native dcpp checkpoints by value, whatever layouts they were saved in.
//
//   bazel run //scripts:diff -- A B [--atol X] [--memory-budget 256M] [--no-verify] [--quiet]
//
// Prints one line per key that differs, e.g.
//   net2.weight: 3 of 160 elements differ (max |a-b| 0.5, first at [2, 7])
//   only in A: optim.state.x
// then "N keys compared, B bytes: identical" (exit 0) or "K keys differ; ..." (exit 1).
// A checksum mismatch or unreadable checkpoint is an error (exit 1); a bad command line exits 2.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/base/error.h"
#include "core/storage/open.h"
#include "core/tools/diff.h"
#include "scripts/cli.h"

namespace {

std::string Count(int64_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

double ParseAtol(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || v < 0) {
    throw dcpp::cli::UsageError("--atol: cannot read '" + text + "' as a number >= 0 (e.g. 1e-6)");
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Compare two dcpp checkpoints by value, whatever their layouts", "diff"};
  std::string a, b, atol = "0", budget = "256M";
  dcpp::DiffOptions opt;
  bool quiet = false;
  app.add_option("A", a, "first checkpoint folder")->required();
  app.add_option("B", b, "second checkpoint folder")->required();
  app.add_option("--atol", atol,
                 "largest |a-b| counted equal for floating dtypes (0: bitwise; integers: always exact)")
      ->capture_default_str();
  app.add_option("--memory-budget", budget, "bytes of band buffers at most, e.g. 64M")->capture_default_str();
  app.add_flag("--no-verify", [&](int64_t) { opt.verify_checksums = false; }, "skip checksums");
  app.add_flag("-q,--quiet", quiet, "print only the summary line");
  return dcpp::cli::Run(app, argc, argv, [&] {
    opt.atol = ParseAtol(atol);
    opt.memory_budget = dcpp::cli::ParseBytes(budget);
    const std::string pa = dcpp::cli::UserPath(a), pb = dcpp::cli::UserPath(b);
    for (const std::string& p : {pa, pb}) {
      DCPP_CHECK(std::filesystem::exists(p), "no checkpoint folder ", p);
    }
    const dcpp::DiffReport r = dcpp::Diff(*dcpp::OpenReader(pa), *dcpp::OpenReader(pb), opt);
    if (!quiet) {
      for (const dcpp::KeyDiff& d : r.differences) std::printf("%s\n", dcpp::DescribeDifference(d).c_str());
    }
    const std::string compared = Count(r.keys_compared, "key") + " compared, " + Count(r.bytes_compared, "byte");
    if (r.identical()) {
      std::printf("%s: identical\n", compared.c_str());
      return dcpp::cli::kOk;
    }
    const int64_t n = static_cast<int64_t>(r.differences.size());
    std::printf("%s %s; %s\n", Count(n, "key").c_str(), n == 1 ? "differs" : "differ", compared.c_str());
    return dcpp::cli::kFailed;
  });
}
