// Implementation of sample_checkpoint.h.
#include "core/tools/sample_checkpoint.h"

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "core/base/error.h"
#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/testing/errors.h"

namespace dcpp::testing {

proto::Metadata Md(const TempDir& d) { return ParseMetadata(ReadFile(d / ".metadata"), d.path()); }
void WriteMd(const TempDir& d, const proto::Metadata& md) { WriteFile(d / ".metadata", SerializeMetadata(md)); }

// net1.weight [16, 10] in two row shards, net1.bias whole, a 0-d step, a 2-d grid of four
// chunks, and a blob; two writer threads, so two data files.
void SaveSample(const TempDir& dir) {
  StateDict sd;
  const at::Tensor w = at::arange(160, at::kFloat).reshape({16, 10});
  for (int r = 0; r < 2; ++r) sd.AddSharded("net1.weight", w, Layout::Sharded(2, 0), r);
  sd.AddTensor("net1.bias", at::arange(16, at::kFloat));
  sd.AddTensor("step", at::scalar_tensor(7, at::kLong));
  const at::Tensor g = at::arange(64, at::kInt).reshape({8, 8});
  const Layout grid{{2, 2}, {Placement::Shard(0), Placement::Shard(1)}};
  for (int r = 0; r < 4; ++r) sd.AddSharded("grid", g, grid, r);
  sd.AddBytes("rng", "seed=42");
  SaveOptions so;
  so.thread_count = 2;
  save(sd, dir.path(), so);
}

const proto::TensorMeta& Tensor(const proto::Metadata& md, const std::string& key) {
  for (const auto& t : md.tensors()) {
    if (t.fqn() == key) return t;
  }
  throw Error("no key " + key);
}
proto::TensorMeta& MutableTensor(proto::Metadata& md, const std::string& key) {
  for (auto& t : *md.mutable_tensors()) {
    if (t.fqn() == key) return t;
  }
  throw Error("no key " + key);
}

uint64_t SumOfLengths(const proto::Metadata& md) {
  uint64_t n = 0;
  for (const auto& t : md.tensors()) {
    for (const auto& c : t.chunks()) n += c.length();
  }
  for (const auto& b : md.bytes()) n += b.length();
  return n;
}

}  // namespace dcpp::testing
