// libFuzzer target: the pickle decoder (core/storage/dcp/pickle.h) on any bytes, every global allowed (the
// decoder executes nothing, so allowing them all reaches the most code), then Repr of the
// result. A dcpp::Error is the expected answer to bad input; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/error.h"
#include "core/storage/dcp/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    const dcpp::pickle::ValuePtr v =
        dcpp::pickle::Decode(bytes, [](const std::string&, const std::string&) { return true; }, "fuzz");
    dcpp::pickle::Repr(*v, 1000);
  } catch (const dcpp::Error&) {
  }
  return 0;
}
