// Making c10d process groups for dcpp's own use: a gloo backend over any c10d Store (tests use
// a HashStore or FileStore; torchrun launches use a TCPStore), and the whole rendezvous from
// torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so that our binaries
// run under `torchrun --no-python`, on one machine or several. What gloo binds and the
// rendezvous / collective timeouts are GlooOptions (gloo_options.h), each settable from the
// environment; README "Many nodes" lists the variables.
#pragma once

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <memory>
#include <string>

#include "core/comm/c10d_comm.h"
#include "core/comm/gloo_options.h"

namespace c10d {
class Store;
}

namespace dcpp {

// A gloo process group of `size` ranks meeting in `store`. `host` names the address gloo
// binds ("127.0.0.1" on one machine) unless GLOO_SOCKET_IFNAME names interfaces; empty: the
// host's name (see GlooOptions::host). `timeout` bounds the rendezvous and each collective.
// Both MakeGlooBackend overloads and CommFromTorchrunEnv set SIGPIPE to be ignored when it
// still has its default action, so that a rank that dies makes the others' collectives fail
// with an error rather than killing them.
c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout,
                                                  const std::string& host = "127.0.0.1");

// The same with every choice explicit or from the environment (GlooOptions). The rendezvous
// (gloo's full-mesh connect through `store`) ends within opts' rendezvous timeout, with a
// dcpp::Error naming the addresses bound, the ranks that never arrived and what to set; the
// backend's collectives then use the collective timeout. `store_name` ("TCPStore at
// 10.0.0.1:29500") goes into those errors.
c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size, const GlooOptions& opts,
                                                  const std::string& store_name = "the store");

// The rendezvous torchrun sets up: a TCPStore at MASTER_ADDR:MASTER_PORT (hosted by rank 0,
// or joined as a client when torchrun's agent already hosts it — TORCHELASTIC_USE_AGENT_STORE)
// and a gloo group over it, bound as `opts` says. Throws dcpp::Error naming a missing or
// malformed variable, or the store address and what to set when the rendezvous fails.
std::unique_ptr<C10dComm> CommFromTorchrunEnv(const GlooOptions& opts = {});
// `timeout` bounds both the rendezvous and each collective (explicit: the environment's
// DCPP_*_TIMEOUT_S do not apply).
std::unique_ptr<C10dComm> CommFromTorchrunEnv(std::chrono::milliseconds timeout);

// True when RANK and WORLD_SIZE are set (the process was launched by torchrun or alike).
bool LaunchedByTorchrun();

}  // namespace dcpp
