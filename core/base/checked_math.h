// Overflow-checked integer arithmetic for sizes and offsets that come from untrusted input
// (checkpoint metadata, file headers). Each returns std::nullopt instead of wrapping around.
// Header-only, pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>

namespace dcpp {

inline std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

inline std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a + b for byte positions in a file: fails when the sum does not fit in int64 (off_t), so that
// every file range [offset, offset + length) that passes can be handed to the OS.
inline std::optional<uint64_t> CheckedFileEnd(uint64_t offset, uint64_t length) {
  uint64_t r;
  if (__builtin_add_overflow(offset, length, &r) || r > static_cast<uint64_t>(INT64_MAX)) {
    return std::nullopt;
  }
  return r;
}

// The product of `sizes` (the element count of a shape), or nullopt when it overflows int64.
// Negative sizes are the caller's to refuse; an empty list gives 1.
template <typename Ints>
std::optional<int64_t> CheckedNumel(const Ints& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    const auto m = CheckedMul(n, s);
    if (!m) return std::nullopt;
    n = *m;
  }
  return n;
}

}  // namespace dcpp
