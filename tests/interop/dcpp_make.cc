// dcpp_make OUT --format dcp|native --layout fsdp|tp --world N: saves, from one process, the
// checkpoint that N ranks of the seeds' MLP (net1 = Linear(8, 16), net2 = Linear(16, 8))
// would write in that layout, with values Python regenerates (dcpp_side.py, expected()):
//
//   key k (in the order below), flat index i:  float64(((i * 37 + k * 101) % 1000) / 1000 - 0.5)
//   cast to the key's dtype.
//
//   0 net1.weight [16, 8]   fsdp Shard(0)   tp Shard(0)   (ColwiseParallel)
//   1 net1.bias   [16]      fsdp Shard(0)   tp Shard(0)
//   2 net2.weight [8, 16]   fsdp Shard(0)   tp Shard(1)   (RowwiseParallel)
//   3 net2.bias   [8]       fsdp Shard(0)   tp Replicate()
//   4 extra.bf16  [7, 5]    bfloat16, uneven: fsdp Shard(0), tp Shard(1)
//   extra.obj     bytes: a torch.save archive of the Python list [1, 'a']
//   extra.raw     bytes: raw (not an archive); DCP stores it as a Python bytes object
//
// Under torchrun (RANK and WORLD_SIZE set) each process is one rank of a real gloo group: it
// adds only its own chunks and they save together (--world is then WORLD_SIZE), so every rank
// writes its own files and rank 0 commits the metadata.
//
// Exit codes: 0 saved, 1 error, 2 usage.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/comm/gloo.h"
#include "core/dcpp.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/open.h"

namespace {

// The raw blob; dcpp_side.py expects the same bytes.
const std::string kRaw("dcpp raw \x00\x01\x02\xff", 13);

struct Key {
  const char* fqn;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  dcpp::Layout fsdp, tp;
};

at::Tensor Values(int64_t k, const Key& key) {
  int64_t n = 1;
  for (int64_t s : key.shape) n *= s;
  return at::arange(n, at::kLong)
      .mul(37)
      .add(k * 101)
      .remainder(1000)
      .to(at::kDouble)
      .div(1000)
      .sub(0.5)
      .reshape(key.shape)
      .to(key.dtype);
}

int Usage() {
  std::fprintf(stderr, "usage: dcpp_make OUT --format dcp|native --layout fsdp|tp --world N\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  std::string out = argv[1], format = "dcp", layout = "fsdp";
  int64_t world = 2;
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) return Usage();
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--format") {
      format = value;
    } else if (flag == "--layout") {
      layout = value;
    } else if (flag == "--world") {
      world = std::atoll(value.c_str());
    } else {
      return Usage();
    }
  }
  if ((layout != "fsdp" && layout != "tp") || world < 1) return Usage();
  try {
    std::unique_ptr<dcpp::C10dComm> comm;
    if (dcpp::LaunchedByTorchrun()) {
      comm = dcpp::CommFromTorchrunEnv(std::chrono::minutes(2));
      world = comm->size();
    }
    using dcpp::Layout;
    using dcpp::Placement;
    const Layout rep = Layout::Replicated(world);
    const std::vector<Key> keys = {
        {"net1.weight", at::kFloat, {16, 8}, Layout::Sharded(world, 0), Layout::Sharded(world, 0)},
        {"net1.bias", at::kFloat, {16}, Layout::Sharded(world, 0), Layout::Sharded(world, 0)},
        {"net2.weight", at::kFloat, {8, 16}, Layout::Sharded(world, 0), Layout::Sharded(world, 1)},
        {"net2.bias", at::kFloat, {8}, Layout::Sharded(world, 0), rep},
        {"extra.bf16", at::kBFloat16, {7, 5}, Layout::Sharded(world, 0), Layout::Sharded(world, 1)},
    };
    std::vector<at::Tensor> keep;  // the state dict holds views of these
    dcpp::StateDict sd;
    for (size_t k = 0; k < keys.size(); ++k) {
      keep.push_back(Values(static_cast<int64_t>(k), keys[k]));
      const Layout& l = layout == "fsdp" ? keys[k].fsdp : keys[k].tp;
      for (int64_t r = 0; r < world; ++r) {
        if (comm == nullptr || r == comm->rank()) sd.AddSharded(keys[k].fqn, keep.back(), l, r);
      }
    }
    using dcpp::pickle::Value;
    sd.AddBytes("extra.obj",
                dcpp::torch_archive::EncodeObject(*Value::List({Value::Int(1), Value::Str("a")})));
    sd.AddBytes("extra.raw", kRaw);
    dcpp::SaveOptions opt;
    opt.format = dcpp::ParseFormat(format);
    opt.comm = comm.get();
    dcpp::save(sd, out, opt);
    if (comm == nullptr || comm->rank() == 0) {
      std::printf("saved %s %s over %lld ranks%s into %s\n", format.c_str(), layout.c_str(),
                  static_cast<long long>(world), comm ? " (one process each)" : "", out.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dcpp_make: error: %s\n", dcpp::ErrorMessage(e).c_str());
    return 1;
  }
  return 0;
}
