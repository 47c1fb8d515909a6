// Test helpers for error paths: the message a call fails with, and a check that it names
// what it should; plus whole-file reads and writes for corrupting checkpoints on purpose.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "core/base/error.h"

namespace dcpp::testing {

// The message `f` fails with: a dcpp::Error's text, "NOT A dcpp::Error: ..." for any other
// exception, "(no error)" when it succeeds.
inline std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("NOT A dcpp::Error: ") + e.what();
  }
  return "(no error)";
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace dcpp::testing

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)
