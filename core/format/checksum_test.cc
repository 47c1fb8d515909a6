#include "core/format/checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <random>
#include <vector>

namespace dcpp {
namespace {

// Whatever implementation is picked, values equal libxxhash's XXH3-64 (the on-disk format).
TEST(Checksum, MatchesLibxxhashForAnySplit) {
  std::mt19937 rng(1);
  for (size_t n : {0u, 1u, 3u, 16u, 17u, 128u, 129u, 240u, 241u, 1000u, 4096u, 100000u}) {
    std::vector<unsigned char> buf(n);
    for (auto& b : buf) b = static_cast<unsigned char>(rng());
    const uint64_t want = XXH3_64bits(buf.data(), n);
    EXPECT_EQ(Checksum::Of(buf.data(), n), want) << n;
    Checksum c;
    size_t pos = 0;
    while (pos < n) {
      const size_t step = std::min<size_t>(n - pos, 1 + rng() % 700);
      c.Update(buf.data() + pos, step);
      pos += step;
    }
    EXPECT_EQ(c.Digest(), want) << n;
  }
}

}  // namespace
}  // namespace dcpp
