// How Meta's Llama reference code (github.com/meta-llama/llama, llama3; fairscale's model
// parallel layers) splits each weight across its model-parallel ranks, which is how its
// `consolidated.NN.pth` files hold them: file NN is rank NN's slice.
//
//   tok_embeddings.weight    [vocab, dim]: ParallelEmbedding (Llama 1 and 2) splits dim 1,
//                            VocabParallelEmbedding (Llama 3) dim 0; told apart by params.json's
//                            `dim` (a slice whose dim 1 equals it was split on dim 0)
//   attention.wq/wk/wv, feed_forward.w1/w3, output   ColumnParallelLinear: dim 0
//   attention.wo, feed_forward.w2                    RowParallelLinear: dim 1
//   *norm.weight, rope.freqs                         replicated: every file holds it whole
//
// Thread-safe (a pure function).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dcpp {
namespace torchsave {

// The dimension along which `fqn` is split across `ranks` files, each holding a slice of
// shape `slice`, or -1 when every file holds it whole. `model_dim` is params.json's `dim`
// (0 when there is none). Throws dcpp::Error naming `where` and the key for a key the layout
// does not know, or tok_embeddings without a `model_dim` that tells its split.
int LlamaSplitDim(const std::string& fqn, const std::vector<int64_t>& slice, int64_t model_dim, int ranks,
                  const std::string& where);

}  // namespace torchsave
}  // namespace dcpp
