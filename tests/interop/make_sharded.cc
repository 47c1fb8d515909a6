// make_sharded: a test helper that saves a small checkpoint in several ranks' layouts and
// dtypes, from one process, with values Python can regenerate (safetensors_check.py, KEYS).
//
//   make_sharded OUT
//
// Each tensor is arange(numel) in float64, reshaped, scaled and shifted, then cast; the same
// ops in Python's torch give the same bits. Exit codes: 0 written, 1 error, 2 usage.
#include <ATen/ATen.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/dcpp.h"

namespace {

struct Key {
  const char* fqn;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  double scale, shift;
  dcpp::Layout layout;
};

// Keep in step with KEYS in safetensors_check.py.
std::vector<Key> Keys() {
  const dcpp::Layout mesh2d{{2, 2}, {dcpp::Placement::Shard(0), dcpp::Placement::Shard(1)}};
  return {
      {"model.embed.weight", at::kFloat, {64, 16}, 0.5, -100, dcpp::Layout::Sharded(4, 0)},
      {"model.layers.0.attn.wq", at::kBFloat16, {32, 24}, 0.01, 0, dcpp::Layout::Sharded(2, 1)},
      {"model.layers.0.mlp.w1", at::kHalf, {40, 8}, 0.125, -3, mesh2d},
      {"model.norm.weight", at::kDouble, {16}, 1.0 / 3, 1, dcpp::Layout::Replicated(2)},
      {"model.ids", at::kLong, {7, 3}, 1000003, -5, dcpp::Layout::Sharded(3, 0)},
      {"model.bytes", at::kByte, {100}, 1, 0, dcpp::Layout::Sharded(4, 0)},
      {"model.step", at::kInt, {}, 1, 42, dcpp::Layout::Replicated(2)},
  };
}

at::Tensor Values(const Key& k) {
  int64_t n = 1;
  for (int64_t s : k.shape) n *= s;
  return at::arange(n, at::kDouble).reshape(k.shape).mul(k.scale).add(k.shift).to(k.dtype);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_sharded OUT\n");
    return 2;
  }
  try {
    std::vector<at::Tensor> keep;  // the state dict holds views
    dcpp::StateDict sd;
    for (const Key& k : Keys()) {
      keep.push_back(Values(k));
      for (int64_t r = 0; r < k.layout.world_size(); ++r) sd.AddSharded(k.fqn, keep.back(), k.layout, r);
    }
    // mask: arange % 3 == 0, as bool, FSDP over 2.
    keep.push_back(at::arange(10, at::kLong).remainder(3).eq(0));
    for (int64_t r = 0; r < 2; ++r) sd.AddSharded("model.mask", keep.back(), dcpp::Layout::Sharded(2, 0), r);
    sd.AddBytes("extra_state", "not a tensor");
    dcpp::save(sd, std::string(argv[1]));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_sharded: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
