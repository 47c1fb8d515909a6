#include "core/storage/torchsave/llama_layout.h"

#include "core/base/error.h"

namespace dcpp {
namespace torchsave {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `fqn` is `name` itself or ends in ".name".
bool Named(const std::string& fqn, const std::string& name) {
  return fqn == name || EndsWith(fqn, "." + name);
}

}  // namespace

int LlamaSplitDim(const std::string& fqn, const std::vector<int64_t>& slice, int64_t model_dim, int ranks,
                  const std::string& where) {
  for (const char* n : {"attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
                        "feed_forward.w1.weight", "feed_forward.w3.weight"}) {
    if (Named(fqn, n)) return 0;
  }
  if (fqn == "output.weight") return 0;
  for (const char* n : {"attention.wo.weight", "feed_forward.w2.weight"}) {
    if (Named(fqn, n)) return 1;
  }
  if (EndsWith(fqn, "norm.weight") || fqn == "rope.freqs") return -1;
  if (fqn == "tok_embeddings.weight") {
    DCPP_CHECK(slice.size() == 2, where, ": key 'tok_embeddings.weight' has ", slice.size(),
               " dimensions; the Llama layout expects [vocab, dim]");
    DCPP_CHECK(model_dim > 0, where, ": key 'tok_embeddings.weight' may be split on dim 0 (Llama 3) or 1 "
               "(Llama 1 and 2); params.json's `dim` tells which, and there is none");
    if (slice[1] == model_dim) return 0;
    DCPP_CHECK(slice[1] * ranks == model_dim, where, ": key 'tok_embeddings.weight' has slices of [",
               slice[0], ", ", slice[1], "] in ", ranks, " files, which fits params.json's dim ", model_dim,
               " split neither on dim 0 nor on dim 1");
    return 1;
  }
  throw Error(StrCat(where, ": key '", fqn, "' is not part of Meta's Llama reference layout, so how its ",
                     ranks, " consolidated files split it is unknown"));
}

}  // namespace torchsave
}  // namespace dcpp
