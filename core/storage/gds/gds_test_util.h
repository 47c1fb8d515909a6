// Test helpers shared by gds_driver_test and gds_file_test (testonly): environment variables
// set for one scope, cuFile's log kept out of the runfiles folder, and a file written whole.
#pragma once

#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

namespace dcpp::gds_testing {

// cuFile logs to ./cufile.log by default; keep that out of the runfiles folder.
[[maybe_unused]] const bool kLogToTmp = [] {
  const char* tmp = std::getenv("TEST_TMPDIR");
  ::setenv("CUFILE_LOGFILE_PATH", (std::string(tmp ? tmp : "/tmp") + "/cufile.log").c_str(), 0);
  return true;
}();

// Sets (or, with nullopt, unsets) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace dcpp::gds_testing
