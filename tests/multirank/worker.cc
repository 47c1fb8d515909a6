// A rank of a multi-process test, launched with torchrun's environment (RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT) by tests/launch_test.cc or by the real torchrun.
//
//   worker roundtrip DIR   save a sharded tensor, load it column-wise, check it
//   worker die DIR         rank 1 exits abruptly after the rendezvous; the others save
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/comm/gloo.h"
#include "core/dcpp.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: worker roundtrip|die DIR\n");
    return 2;
  }
  const std::string scenario = argv[1], dir = argv[2];
  const char* t = std::getenv("DCPP_TEST_TIMEOUT_MS");
  const std::chrono::milliseconds timeout(t ? std::atoi(t) : 60000);
  int rank = -1;
  try {
    auto comm = dcpp::CommFromTorchrunEnv(timeout);
    rank = comm->rank();
    const int world = comm->size();
    if (scenario == "die" && rank == 1) _exit(3);
    const at::Tensor full = at::arange(12 * 10, at::kFloat).reshape({12, 10});
    dcpp::StateDict sd;
    sd.AddSharded("w", full, dcpp::Layout::Sharded(world, 0), rank);
    dcpp::SaveOptions so;
    so.comm = comm.get();
    dcpp::save(sd, dir, so);
    dcpp::StateDict cols;
    cols.AddUnallocated("w", at::kFloat, {12, 10}, dcpp::Layout::Sharded(world, 1), rank);
    dcpp::LoadOptions lo;
    lo.comm = comm.get();
    dcpp::load(cols, dir, lo);
    const dcpp::LocalChunk& c = cols.FindTensor("w")->chunks[0];
    if (!at::equal(c.tensor, full.narrow(1, c.box.offsets[1], c.box.sizes[1]))) {
      std::printf("rank %d of %d: values differ\n", rank, world);
      return 1;
    }
    std::printf("rank %d of %d ok\n", rank, world);
    return 0;
  } catch (const std::exception& e) {
    std::printf("rank %d error: %s\n", rank, e.what());
    return 1;
  }
}
