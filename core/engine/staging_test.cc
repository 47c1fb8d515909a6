#include "core/engine/staging.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/base/error.h"

namespace dcpp {
namespace {

// Rows of a transposed (non-contiguous) matrix, staged one row block at a time.
TEST(StagingRing, ToHostDeliversEveryBlockInOrderRowMajor) {
  const at::Tensor t = at::arange(64 * 48, at::kFloat).reshape({64, 48}).t();  // 48 x 64, strided
  ASSERT_FALSE(t.is_contiguous());
  StagingRing ring(/*pool_bytes=*/4 * 4096, /*buffers=*/4);
  ASSERT_EQ(ring.block_bytes(), 4096);
  const int64_t rows_per_block = ring.block_bytes() / (64 * 4);
  std::vector<uint8_t> out;
  int calls = 0;
  for (int64_t r = 0; r < 48; r += rows_per_block) {
    ring.ToHost(t.narrow(0, r, std::min(rows_per_block, 48 - r)),
                [&](const uint8_t* data, int64_t n) {
                  out.insert(out.end(), data, data + n);
                  ++calls;
                });
  }
  ring.Drain();
  EXPECT_EQ(calls, (48 + rows_per_block - 1) / rows_per_block);
  const at::Tensor want = t.contiguous();
  ASSERT_EQ(out.size(), static_cast<size_t>(want.numel() * 4));
  EXPECT_EQ(std::memcmp(out.data(), want.const_data_ptr(), out.size()), 0);
  EXPECT_EQ(ring.staged_bytes(), want.numel() * 4);
}

TEST(StagingRing, HostMemoryStaysWithinThePoolWhateverGoesThrough) {
  StagingRing ring(/*pool_bytes=*/2 * 8192, /*buffers=*/2);
  const at::Tensor big = at::rand({256, 1024}).t();  // 1 MiB, strided
  int64_t delivered = 0;
  const int64_t rows = ring.block_bytes() / (256 * 4);
  for (int64_t r = 0; r < big.size(0); r += rows) {
    ring.ToHost(big.narrow(0, r, rows), [&](const uint8_t*, int64_t n) { delivered += n; });
  }
  ring.Drain();
  EXPECT_EQ(delivered, big.numel() * 4);
  EXPECT_LE(ring.host_bytes(), 2 * 8192);
}

TEST(StagingRing, AnElementLargerThanABufferStillGoesThrough) {
  StagingRing ring(/*pool_bytes=*/16, /*buffers=*/2);  // 8-byte buffers
  const at::Tensor c = at::randn({3}, at::kComplexDouble);  // 16-byte elements
  std::vector<uint8_t> out;
  for (int64_t i = 0; i < 3; ++i) {
    ring.ToHost(c.narrow(0, i, 1), [&](const uint8_t* d, int64_t n) { out.insert(out.end(), d, d + n); });
  }
  ring.Drain();
  ASSERT_EQ(out.size(), 48u);
  EXPECT_EQ(std::memcmp(out.data(), c.const_data_ptr(), 48), 0);
}

TEST(StagingRing, ScatterCopiesRegionsOfABufferIntoStridedTargets) {
  StagingRing ring(1 << 16, 2);
  at::Tensor target = at::zeros({8, 6}, at::kInt).t();  // 6 x 8, strided
  const at::Tensor src = at::arange(48, at::kInt).reshape({6, 8});
  StagingRing::Buffer buf = ring.Acquire(48 * 4, /*pinned=*/false);
  std::memcpy(buf.data, src.const_data_ptr(), 48 * 4);
  const at::Tensor staged = ring.View(buf, 0, at::kInt, {6, 8});
  ring.Scatter(buf, {{target.narrow(0, 0, 3), staged.narrow(0, 0, 3)},
                     {target.narrow(0, 3, 3), staged.narrow(0, 3, 3)}});
  ring.Drain();
  EXPECT_TRUE(at::equal(target, src));
  EXPECT_THROW(ring.View(buf, 4, at::kInt, {ring.block_bytes() / 4}), Error);
}

TEST(StagingRing, AThrowingCallbackReleasesItsBuffer) {
  StagingRing ring(2 * 4096, 2);
  const at::Tensor t = at::ones({4, 4}).t();
  EXPECT_THROW(ring.ToHost(t, [](const uint8_t*, int64_t) { throw Error("disk full"); }), Error);
  int ok = 0;
  for (int i = 0; i < 5; ++i) ring.ToHost(t, [&](const uint8_t*, int64_t) { ++ok; });
  ring.Drain();
  EXPECT_EQ(ok, 5);
}

TEST(StagingRing, RejectsAPoolThatCannotDoubleBuffer) {
  try {
    StagingRing ring(1 << 20, 1);
    FAIL() << "one buffer accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("staging_buffers must be at least 2"), std::string::npos);
  }
  EXPECT_THROW(StagingRing(1, 4), Error);
}

}  // namespace
}  // namespace dcpp
