// dcpp's one error type. Every failure that reaches a caller is a dcpp::Error whose message
// names what failed: the key (FQN), the file, the rank or the planner script and line.
// Errors from LibTorch (c10::Error) and the standard library are caught at the engine's
// boundary and rethrown as dcpp::Error with that context added.
#pragma once

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dcpp {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace internal {
inline void StreamAll(std::ostringstream&) {}
template <typename T, typename... Rest>
void StreamAll(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  StreamAll(os, rest...);
}
}  // namespace internal

// The message of any exception as the user should see it: c10::Error appends a C++ backtrace
// after its first line ("Exception raised from ..."), which is dropped.
inline std::string ErrorMessage(const std::exception& e) {
  const std::string m = e.what();
  return m.substr(0, m.find("\nException raised from"));
}

// Concatenates the arguments with operator<< into one message.
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  internal::StreamAll(os, args...);
  return os.str();
}

}  // namespace dcpp

// Throws dcpp::Error with the streamed message unless `cond` holds.
#define DCPP_CHECK(cond, ...)                              \
  do {                                                     \
    if (!(cond)) throw ::dcpp::Error(::dcpp::StrCat(__VA_ARGS__)); \
  } while (0)
