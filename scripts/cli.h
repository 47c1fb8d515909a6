// Shared plumbing of the command-line tools (convert, inspect, verify, diff): exit codes,
// paths given relative to where `bazel run` was started, and one error handler.
//
//   int main(int argc, char** argv) {
//     CLI::App app{"what it does"};
//     std::string dir;
//     app.add_option("DIR", dir)->required();
//     return dcpp::cli::Run(app, argc, argv, [&] { ...; return dcpp::cli::kOk; });
//   }
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace dcpp::cli {

constexpr int kOk = 0;
constexpr int kFailed = 1;  // the tool ran and found a problem (conversion error, difference)
constexpr int kUsage = 2;   // bad command line

// `path` as the user meant it: `bazel run` starts tools in their runfiles folder, so a
// relative path is taken relative to BUILD_WORKING_DIRECTORY when that is set.
std::string UserPath(const std::string& path);

// Parses the command line (usage errors print the message and return kUsage; --help returns
// kOk), then runs `body`. A dcpp::Error or other exception from `body` prints
// "<tool>: error: <message>" on stderr and returns kFailed; a UsageError returns kUsage.
int Run(CLI::App& app, int argc, char** argv, const std::function<int()>& body);

// Thrown by a tool's body for a usage problem found after parsing (e.g. an unknown --set key).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// True when stderr is a terminal (progress bars are drawn only then).
bool StderrIsTerminal();

// "1.5 GiB", "512 B".
std::string HumanBytes(double bytes);

// "\r[#####.....] <done> / <total>  <rate>/s  ETA <s>" on stderr, at most ten times a second
// (only when told to: callers draw it when StderrIsTerminal()). The destructor ends the line.
class ProgressBar {
 public:
  ProgressBar();
  ~ProgressBar();
  void Update(int64_t done, int64_t total);

 private:
  double start_ = 0, last_ = -1;
  bool drawn_ = false;
};

// Parses "1073741824", "512M", "512MiB", "4G", "1.5GiB" into bytes; throws UsageError.
int64_t ParseBytes(const std::string& text);

}  // namespace dcpp::cli
