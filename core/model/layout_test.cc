#include "core/model/layout.h"

#include <gtest/gtest.h>

#include "core/base/error.h"

namespace dcpp {
namespace {

TEST(Layout, ShardFollowsTorchChunk) {
  // torch.chunk(10, 4) -> 3, 3, 3, 1; torch.chunk(5, 4) -> 2, 2, 1, (empty)
  int64_t start, size;
  const int64_t expect10[][2] = {{0, 3}, {3, 3}, {6, 3}, {9, 1}};
  for (int i = 0; i < 4; ++i) {
    ChunkRange(10, 4, i, &start, &size);
    EXPECT_EQ(start, expect10[i][0]);
    EXPECT_EQ(size, expect10[i][1]);
  }
  ChunkRange(5, 4, 3, &start, &size);
  EXPECT_EQ(size, 0);
  EXPECT_EQ(start, 5);
  ChunkRange(1, 3, 1, &start, &size);  // the 15->1 layer of the uneven seed
  EXPECT_EQ(size, 0);
}

TEST(Layout, ColumnAndRowWiseBoxes) {
  const std::vector<int64_t> w = {16, 10};
  EXPECT_EQ(BoxForRank(w, Layout::Sharded(2, 0), 1), (Box{{8, 0}, {8, 10}}));
  EXPECT_EQ(BoxForRank(w, Layout::Sharded(2, 1), 1), (Box{{0, 5}, {16, 5}}));
  EXPECT_EQ(BoxForRank(w, Layout::Replicated(2), 1), (Box{{0, 0}, {16, 10}}));
}

TEST(Layout, TwoDimensionalMesh) {
  // FSDP (dp=2) x TP (tp=2): Shard(0) over dp, then Shard(1) over tp; rank = dp * 2 + tp.
  const Layout l{{2, 2}, {Placement::Shard(0), Placement::Shard(1)}};
  EXPECT_EQ(l.world_size(), 4);
  EXPECT_EQ(BoxForRank({8, 6}, l, 0), (Box{{0, 0}, {4, 3}}));
  EXPECT_EQ(BoxForRank({8, 6}, l, 1), (Box{{0, 3}, {4, 3}}));
  EXPECT_EQ(BoxForRank({8, 6}, l, 2), (Box{{4, 0}, {4, 3}}));
  // Sharding the same dim twice splits the shard again, as DTensor does.
  const Layout twice{{2, 2}, {Placement::Shard(0), Placement::Shard(0)}};
  EXPECT_EQ(BoxForRank({8}, twice, 3), (Box{{6}, {2}}));
  EXPECT_EQ(l.ToString(), "Shard(0)xShard(1)@[2,2]");
}

TEST(Layout, ParsesPlacementsStrictly) {
  EXPECT_EQ(Placement::Parse("Shard(1)").dim, 1);
  EXPECT_EQ(Placement::Parse("Shard(-1)").dim, -1);  // from the last dimension
  EXPECT_EQ(Placement::Parse("Replicate()").kind, Placement::Kind::kReplicate);
  // Numbers that overflow are refused naming the text, not wrapped or saturated.
  for (const char* text : {"Shard(99999999999999999999)", "Shard(4294967296)", "Shard(-2147483649)"}) {
    try {
      Placement::Parse(text);
      ADD_FAILURE() << text << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
    }
  }
  for (const char* text : {"Shard()", "Shard( 1)", "Shard(+1)", "Shard(1 )", "Shard(1", "Shard(0x1)",
                           "Shard(1))", "Shard(1.5)", "shard(1)", ""}) {
    EXPECT_THROW(Placement::Parse(text), Error) << text;
  }
}

TEST(Layout, BadInput) {
  EXPECT_THROW(BoxForRank({4}, Layout::Sharded(2, 1), 0), Error);
  EXPECT_THROW(BoxForRank({4}, Layout::Sharded(2, 0), 2), Error);
}

}  // namespace
}  // namespace dcpp
