// Making c10d process groups for dcpp's own use: a gloo backend over any c10d Store (tests use
// a HashStore or FileStore; torchrun launches use a TCPStore), and the whole rendezvous from
// torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so that our binaries
// run under `torchrun --no-python`, on one machine or several.
#pragma once

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <memory>
#include <string>

#include "core/comm/c10d_comm.h"

namespace c10d {
class Store;
}

namespace dcpp {

// A gloo process group of `size` ranks meeting in `store`. `host` names the interface gloo
// binds ("127.0.0.1" on one machine); empty uses GLOO_SOCKET_IFNAME or the host's name.
// Both functions here set SIGPIPE to be ignored when it still has its default action, so that
// a rank that dies makes the others' collectives fail with an error rather than killing them.
c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout,
                                                  const std::string& host = "127.0.0.1");

// The rendezvous torchrun sets up: a TCPStore at MASTER_ADDR:MASTER_PORT (hosted by rank 0,
// or joined as a client when torchrun's agent already hosts it — TORCHELASTIC_USE_AGENT_STORE)
// and a gloo group over it. Throws dcpp::Error naming a missing or malformed variable.
std::unique_ptr<C10dComm> CommFromTorchrunEnv(
    std::chrono::milliseconds timeout = std::chrono::minutes(10));

// True when RANK and WORLD_SIZE are set (the process was launched by torchrun or alike).
bool LaunchedByTorchrun();

}  // namespace dcpp
