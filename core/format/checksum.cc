#include "core/format/checksum.h"

#include <xxhash.h>

namespace dcpp {
namespace internal {
void* Avx2Create();
void Avx2Update(void* s, const void* p, size_t n);
uint64_t Avx2Digest(const void* s);
void Avx2Free(void* s);
uint64_t Avx2Oneshot(const void* p, size_t n);
}  // namespace internal

namespace {
const bool kAvx2 = __builtin_cpu_supports("avx2");
}  // namespace

bool Checksum::UsesAvx2() { return kAvx2; }

Checksum::Checksum() {
  if (kAvx2) {
    state_ = internal::Avx2Create();
  } else {
    XXH3_state_t* s = XXH3_createState();
    XXH3_64bits_reset(s);
    state_ = s;
  }
}

Checksum::~Checksum() {
  if (kAvx2) {
    internal::Avx2Free(state_);
  } else {
    XXH3_freeState(static_cast<XXH3_state_t*>(state_));
  }
}

void Checksum::Update(const void* data, size_t length) {
  if (kAvx2) {
    internal::Avx2Update(state_, data, length);
  } else {
    XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, length);
  }
}

uint64_t Checksum::Digest() const {
  return kAvx2 ? internal::Avx2Digest(state_) : XXH3_64bits_digest(static_cast<XXH3_state_t*>(state_));
}

uint64_t Checksum::Of(const void* data, size_t length) {
  return kAvx2 ? internal::Avx2Oneshot(data, length) : XXH3_64bits(data, length);
}

}  // namespace dcpp
