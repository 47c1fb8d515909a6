// One rank of the crash test's multi-rank save (tests/crash/crash_test.cc), launched with
// torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
//
//   crash_worker GEN MIB DIR native|dcp
//
// saves generation GEN (tests/crash/generation.h, about MIB MiB) Shard(0) over the ranks into
// DIR, over whatever DIR holds. DCPP_CRASH_TIMEOUT_MS bounds every collective (default 60 s).
// Exit 0 saved, 1 error (printed), 2 usage.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/base/error.h"
#include "core/comm/gloo.h"
#include "core/dcpp.h"
#include "tests/crash/generation.h"

int main(int argc, char** argv) {
  if (argc != 5 || (std::string(argv[4]) != "native" && std::string(argv[4]) != "dcp")) {
    std::fprintf(stderr, "usage: crash_worker GEN MIB DIR native|dcp\n");
    return 2;
  }
  const int gen = std::atoi(argv[1]);
  const int64_t mib = std::atoll(argv[2]);
  const std::string dir = argv[3];
  const char* t = std::getenv("DCPP_CRASH_TIMEOUT_MS");
  const std::chrono::milliseconds timeout(t ? std::atoi(t) : 60000);
  int rank = -1;
  try {
    auto comm = dcpp::CommFromTorchrunEnv(timeout);
    rank = comm->rank();
    dcpp::StateDict sd;
    dcpp::crash::AddGeneration(dcpp::crash::MakeGeneration(gen, mib), comm->size(), rank, sd);
    dcpp::SaveOptions so;
    so.comm = comm.get();
    so.format = dcpp::ParseFormat(argv[4]);
    dcpp::save(sd, dir, so);
    std::printf("rank %d saved generation %d into %s\n", rank, gen, dir.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::printf("rank %d error: %s\n", rank, dcpp::ErrorMessage(e).c_str());
    return 1;
  }
}
