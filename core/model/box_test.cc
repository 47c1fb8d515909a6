#include "core/model/box.h"

#include <gtest/gtest.h>

namespace dcpp {
namespace {

TEST(Box, IntersectAndContains) {
  const Box a{{0, 0}, {8, 10}}, b{{4, 5}, {8, 10}};
  const auto r = Intersect(a, b);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (Box{{4, 5}, {4, 5}}));
  EXPECT_FALSE(Intersect(a, Box{{8, 0}, {2, 10}}));  // touching is not overlapping
  EXPECT_TRUE(Contains(a, *r));
  EXPECT_FALSE(Contains(*r, a));
  // 0-d boxes always overlap (one element); empty boxes never do.
  EXPECT_TRUE(Intersect(Box{}, Box{}));
  EXPECT_FALSE(Intersect(Box{{0}, {0}}, Box{{0}, {4}}));
  EXPECT_EQ((Box{{1, 2}, {3, 4}}).ToString(), "[1:4, 2:6]");
}

TEST(Box, RunsOfWholeRowsMergeIntoOne) {
  const Box chunk{{8, 0}, {8, 10}};
  const auto runs = RunsOf(chunk, Box{{10, 0}, {3, 10}}, 4);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].offset, 2 * 10 * 4);
  EXPECT_EQ(runs[0].length, 3 * 10 * 4);
}

TEST(Box, RunsOfAColumnBlockArePerRow) {
  const Box chunk{{0, 0}, {4, 10}};
  const auto runs = RunsOf(chunk, Box{{1, 2}, {2, 3}}, 2);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].offset, (1 * 10 + 2) * 2);
  EXPECT_EQ(runs[0].length, 3 * 2);
  EXPECT_EQ(runs[1].offset, (2 * 10 + 2) * 2);
}

TEST(Box, RunsOf3dAndZeroDim) {
  const Box chunk{{0, 0, 0}, {2, 3, 4}};
  // Middle slice spanning the last dim fully: one run per outer index.
  const auto runs = RunsOf(chunk, Box{{0, 1, 0}, {2, 2, 4}}, 1);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].offset, 4);
  EXPECT_EQ(runs[0].length, 8);
  EXPECT_EQ(runs[1].offset, 12 + 4);
  const auto scalar = RunsOf(Box{}, Box{}, 8);
  ASSERT_EQ(scalar.size(), 1u);
  EXPECT_EQ(scalar[0].length, 8);
  EXPECT_TRUE(RunsOf(chunk, Box{{0, 0, 0}, {2, 0, 4}}, 1).empty());
}

TEST(Box, CoalesceOnlyWhenTheGapIsCheap) {
  // Runs of 1000 bytes with 10-byte gaps merge (1% extra); with 600-byte gaps they don't.
  std::vector<ByteRun> close = {{0, 1000}, {1010, 1000}, {2020, 1000}};
  auto merged = CoalesceRuns(close, 4096);
  ASSERT_EQ(merged.size(), 1u);
  EXPECT_EQ(merged[0].length, 3020);
  std::vector<ByteRun> far = {{0, 1000}, {1600, 1000}};
  EXPECT_EQ(CoalesceRuns(far, 4096).size(), 2u);
}

TEST(Box, SplitRowMajorStaysWithinTheBudgetAndCoversInOrder) {
  const Box box{{4, 0, 2}, {3, 5, 7}};
  for (int64_t budget : {1, 4, 27, 28, 100, 140, 141, 419, 420, 10000}) {
    SCOPED_TRACE(budget);
    const auto blocks = SplitRowMajor(box, 4, budget);
    int64_t next = 0;
    for (const Block& b : blocks) {
      const int64_t bytes = b.box.numel() * 4;
      EXPECT_LE(bytes, std::max<int64_t>(budget, 4));
      EXPECT_EQ(b.byte_offset, next);  // contiguous and in row-major order
      const auto runs = RunsOf(box, b.box, 4);
      ASSERT_EQ(runs.size(), 1u);
      EXPECT_EQ(runs[0].offset, b.byte_offset);
      EXPECT_EQ(runs[0].length, bytes);
      next += bytes;
    }
    EXPECT_EQ(next, box.numel() * 4);
  }
  EXPECT_EQ(SplitRowMajor(Box{}, 8, 1).size(), 1u);
  EXPECT_TRUE(SplitRowMajor(Box{{0}, {0}}, 8, 64).empty());
}

}  // namespace
}  // namespace dcpp
