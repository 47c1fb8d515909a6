#include "scripts/cli.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>

namespace dcpp::cli {

std::string UserPath(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  const char* base = std::getenv("BUILD_WORKING_DIRECTORY");
  if (base == nullptr || *base == '\0') return path;
  return std::string(base) + "/" + path;
}

int Run(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsage;
  }
  const std::string tool = app.get_name().empty() ? "dcpp" : app.get_name();
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\nRun with --help for more information.\n", tool.c_str(), e.what());
    return kUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), e.what());
    return kFailed;
  }
}

bool StderrIsTerminal() { return ::isatty(STDERR_FILENO) == 1; }

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

int64_t ParseBytes(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  std::string unit(end);
  double scale = 1;
  if (unit == "" || unit == "B") {
    scale = 1;
  } else if (unit == "K" || unit == "KiB" || unit == "k") {
    scale = 1024.0;
  } else if (unit == "M" || unit == "MiB") {
    scale = 1024.0 * 1024;
  } else if (unit == "G" || unit == "GiB") {
    scale = 1024.0 * 1024 * 1024;
  } else {
    throw UsageError("cannot read '" + text + "' as a size (e.g. 1073741824, 512M, 4G)");
  }
  // (2^63 bytes and more do not fit in an int64: casting them would be undefined.)
  if (end == text.c_str() || !(v > 0) || !std::isfinite(v) || !(v * scale < 9223372036854775808.0) ||
      v * scale < 1) {
    throw UsageError("cannot read '" + text + "' as a positive size (e.g. 1073741824, 512M, 4G)");
  }
  return static_cast<int64_t>(v * scale);
}

namespace {
double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

ProgressBar::ProgressBar() : start_(Seconds()) {}

ProgressBar::~ProgressBar() {
  if (drawn_) std::fprintf(stderr, "\n");
}

void ProgressBar::Update(int64_t done, int64_t total) {
  const double now = Seconds();
  if (done < total && last_ >= 0 && now - last_ < 0.1) return;
  last_ = now;
  const double secs = now - start_;
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
  const int width = 30;
  const int filled = total > 0 ? static_cast<int>(width * static_cast<double>(done) / static_cast<double>(total)) : width;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  const double eta = rate > 0 ? static_cast<double>(total - done) / rate : 0;
  std::fprintf(stderr, "\r[%s] %s / %s  %s/s  ETA %.0fs   ", bar.c_str(), HumanBytes(static_cast<double>(done)).c_str(),
               HumanBytes(static_cast<double>(total)).c_str(), HumanBytes(rate).c_str(), eta);
  drawn_ = true;
}

}  // namespace dcpp::cli
