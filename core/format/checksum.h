// Checksum: streaming XXH3-64 (seed 0) of a chunk's bytes, as stored in the metadata.
//
// Uses an AVX2 build of XXH3 when the CPU has AVX2 (about twice the speed of Debian's
// libxxhash, which is built for baseline x86-64) and libxxhash otherwise; both give the same
// value, since XXH3 is defined independently of the vector width. Not thread-safe: one per
// thread (or per chunk).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dcpp {

class Checksum {
 public:
  Checksum();
  ~Checksum();
  Checksum(const Checksum&) = delete;
  Checksum& operator=(const Checksum&) = delete;

  void Update(const void* data, size_t length);
  uint64_t Digest() const;

  // The checksum of one buffer.
  static uint64_t Of(const void* data, size_t length);
  // True when the AVX2 implementation is in use (for benchmarks' reports).
  static bool UsesAvx2();

 private:
  void* state_;
};

}  // namespace dcpp
