// XXH3-64 compiled for AVX2 (this file alone is built with -mavx2; core/format/checksum.cc only calls
// it after checking the CPU). XXH_INLINE_ALL keeps every xxHash symbol local to this file.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdint>

namespace dcpp::internal {

void* Avx2Create() {
  XXH3_state_t* s = XXH3_createState();
  XXH3_64bits_reset(s);
  return s;
}
void Avx2Update(void* s, const void* p, size_t n) { XXH3_64bits_update(static_cast<XXH3_state_t*>(s), p, n); }
uint64_t Avx2Digest(const void* s) { return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(s)); }
void Avx2Free(void* s) { XXH3_freeState(static_cast<XXH3_state_t*>(s)); }
uint64_t Avx2Oneshot(const void* p, size_t n) { return XXH3_64bits(p, n); }

}  // namespace dcpp::internal
