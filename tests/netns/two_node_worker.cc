// A rank of tests/netns/two_node_test.sh: the dcpp C++ binary that the real torchrun starts
// with --no-python on each of two "nodes" (network namespaces). Every value is regenerated from
// GEN, so any rank of any world size checks every value it loads.
//
//   two_node_worker save DIR GEN [BIG_MB]  sharded, uneven, replicated and bytes entries, plus
//                                           with BIG_MB a tensor of BIG_MB MiB per rank
//   two_node_worker load DIR GEN           every entry in other layouts, every value checked
//
// Prints "rank R of W: saved" / "rank R of W: loaded, N values checked" and exits 0, or
// "rank R of W failed at EPOCH_MS ms: ERROR" (the wall clock, which the test compares with when
// it killed a node) and exits 1. Timeouts and interfaces come from the environment
// (DCPP_*_TIMEOUT_S, GLOO_SOCKET_IFNAME), as for any user binary.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/base/error.h"
#include "core/comm/gloo.h"
#include "core/dcpp.h"

namespace {

int64_t EpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The whole tensors of generation `gen`.
at::Tensor W(int gen) { return (at::arange(16 * 12, at::kFloat) + 1000 * gen).reshape({16, 12}); }
at::Tensor E(int gen) { return (at::arange(10 * 7, at::kLong) * 3 - gen).reshape({10, 7}); }
at::Tensor R(int gen) { return at::arange(5 * 3, at::kDouble).reshape({5, 3}) * 0.5 + gen; }
std::string Cfg(int gen) { return "two nodes, generation " + std::to_string(gen); }
std::string RankBytes(int rank, int gen) {
  return "saved by rank " + std::to_string(rank) + " in generation " + std::to_string(gen);
}

void Save(dcpp::Comm& comm, const std::string& dir, int gen, int64_t big_mb) {
  const int rank = comm.rank(), world = comm.size();
  dcpp::StateDict sd;
  sd.AddSharded("w", W(gen), dcpp::Layout::Sharded(world, 0), rank);  // rows: 4 each
  sd.AddSharded("e", E(gen), dcpp::Layout::Sharded(world, 1), rank);  // 7 columns: uneven
  sd.AddSharded("r", R(gen), dcpp::Layout::Replicated(world), rank);
  sd.AddBytes("cfg", Cfg(gen));
  sd.AddBytes("rank" + std::to_string(rank), RankBytes(rank, gen));
  if (big_mb > 0) {
    const int64_t rows = big_mb * 256;  // rows of 1,024 floats: 4 KiB
    at::Tensor mine = at::full({rows, 1024}, static_cast<float>(rank + gen));
    sd.Add(dcpp::TensorEntry{"big", at::kFloat, {world * rows, 1024},
                             {dcpp::LocalChunk{{{rank * rows, 0}, {rows, 1024}}, mine}}});
  }
  dcpp::SaveOptions so;
  so.comm = &comm;
  std::printf("rank %d of %d: saving at %lld ms\n", rank, world, static_cast<long long>(EpochMs()));
  std::fflush(stdout);
  dcpp::save(sd, dir, so);
  std::printf("rank %d of %d: saved\n", rank, world);
}

// Checks every chunk of `fqn` against the same box of `full`; returns the values checked.
int64_t CheckTensor(const dcpp::StateDict& sd, const std::string& fqn, const at::Tensor& full,
                    int gen) {
  int64_t checked = 0;
  for (const dcpp::LocalChunk& c : sd.FindTensor(fqn)->chunks) {
    at::Tensor want = full;
    for (size_t d = 0; d < c.box.sizes.size(); ++d) {
      want = want.narrow(d, c.box.offsets[d], c.box.sizes[d]);
    }
    DCPP_CHECK(at::equal(c.tensor, want), "'", fqn, "' chunk at ", c.box.offsets[0], ",",
               c.box.offsets[1], " differs from generation ", gen);
    checked += want.numel();
  }
  return checked;
}

void Load(dcpp::Comm& comm, const std::string& dir, int gen) {
  const int rank = comm.rank(), world = comm.size();
  dcpp::StateDict sd;
  sd.AddUnallocated("w", at::kFloat, {16, 12}, dcpp::Layout::Sharded(world, 1), rank);
  sd.AddUnallocated("e", at::kLong, {10, 7}, dcpp::Layout::Sharded(world, 0), rank);
  sd.AddUnallocated("r", at::kDouble, {5, 3}, dcpp::Layout::Replicated(world), rank);
  sd.AddBytes("cfg", "");
  constexpr int kSavedWorld = 4;
  for (int r = 0; r < kSavedWorld; ++r) sd.AddBytes("rank" + std::to_string(r), "");
  dcpp::LoadOptions lo;
  lo.comm = &comm;
  dcpp::load(sd, dir, lo);
  int64_t checked = CheckTensor(sd, "w", W(gen), gen) + CheckTensor(sd, "e", E(gen), gen) +
                    CheckTensor(sd, "r", R(gen), gen);
  DCPP_CHECK(sd.FindBytes("cfg")->data == Cfg(gen), "'cfg' is '", sd.FindBytes("cfg")->data, "'");
  ++checked;
  for (int r = 0; r < kSavedWorld; ++r) {
    const std::string key = "rank" + std::to_string(r), got = sd.FindBytes(key)->data;
    DCPP_CHECK(got == RankBytes(r, gen), "'", key, "' is '", got, "'");
    ++checked;
  }
  std::printf("rank %d of %d: loaded, %lld values checked\n", rank, world,
              static_cast<long long>(checked));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::fprintf(stderr, "usage: two_node_worker save|load DIR GEN [BIG_MB]\n");
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  const int gen = std::atoi(argv[3]);
  const int64_t big_mb = argc == 5 ? std::atoll(argv[4]) : 0;
  int rank = -1, world = -1;
  try {
    auto comm = dcpp::CommFromTorchrunEnv();
    rank = comm->rank();
    world = comm->size();
    if (mode == "save") {
      Save(*comm, dir, gen, big_mb);
    } else if (mode == "load") {
      Load(*comm, dir, gen);
    } else {
      std::fprintf(stderr, "unknown mode '%s'\n", mode.c_str());
      return 2;
    }
    return 0;
  } catch (const std::exception& e) {
    std::printf("rank %d of %d failed at %lld ms: %s\n", rank, world,
                static_cast<long long>(EpochMs()), e.what());
    return 1;
  }
}
