#include "core/storage/torchsave/llama_layout.h"

#include <gtest/gtest.h>

#include "core/testing/errors.h"

namespace dcpp {
namespace torchsave {
namespace {

using testing::ErrorOf;

TEST(LlamaLayout, SplitDimsOfTheReferenceModel) {
  const std::vector<int64_t> any = {8, 8};
  EXPECT_EQ(LlamaSplitDim("layers.0.attention.wq.weight", any, 0, 2, "w"), 0);
  EXPECT_EQ(LlamaSplitDim("layers.11.attention.wk.weight", any, 0, 2, "w"), 0);
  EXPECT_EQ(LlamaSplitDim("layers.0.attention.wv.weight", any, 0, 2, "w"), 0);
  EXPECT_EQ(LlamaSplitDim("layers.0.feed_forward.w1.weight", any, 0, 2, "w"), 0);
  EXPECT_EQ(LlamaSplitDim("layers.0.feed_forward.w3.weight", any, 0, 2, "w"), 0);
  EXPECT_EQ(LlamaSplitDim("output.weight", any, 0, 2, "w"), 0);
  EXPECT_EQ(LlamaSplitDim("layers.0.attention.wo.weight", any, 0, 2, "w"), 1);
  EXPECT_EQ(LlamaSplitDim("layers.3.feed_forward.w2.weight", any, 0, 2, "w"), 1);
  EXPECT_EQ(LlamaSplitDim("layers.0.attention_norm.weight", {8}, 0, 2, "w"), -1);
  EXPECT_EQ(LlamaSplitDim("layers.0.ffn_norm.weight", {8}, 0, 2, "w"), -1);
  EXPECT_EQ(LlamaSplitDim("norm.weight", {8}, 0, 2, "w"), -1);
  EXPECT_EQ(LlamaSplitDim("rope.freqs", {4}, 0, 2, "w"), -1);
}

TEST(LlamaLayout, EmbeddingSplitFollowsParamsDim) {
  // Llama 2 (ParallelEmbedding): [vocab, dim / ranks] slices; Llama 3 (vocab-parallel):
  // [vocab / ranks, dim].
  EXPECT_EQ(LlamaSplitDim("tok_embeddings.weight", {32, 8}, 16, 2, "w"), 1);
  EXPECT_EQ(LlamaSplitDim("tok_embeddings.weight", {16, 16}, 16, 2, "w"), 0);
  EXPECT_HAS(ErrorOf([] { LlamaSplitDim("tok_embeddings.weight", {32, 8}, 0, 2, "/c"); }), "params.json");
  EXPECT_HAS(ErrorOf([] { LlamaSplitDim("tok_embeddings.weight", {32, 5}, 16, 2, "/c"); }),
             "split neither on dim 0 nor on dim 1");
}

TEST(LlamaLayout, UnknownKeysAreRefusedByName) {
  EXPECT_HAS(ErrorOf([] { LlamaSplitDim("layers.0.attention.wqkv.weight", {8, 8}, 16, 8, "/ckpt (8 files)"); }),
             "/ckpt (8 files): key 'layers.0.attention.wqkv.weight' is not part of Meta's Llama reference layout");
}

}  // namespace
}  // namespace torchsave
}  // namespace dcpp
