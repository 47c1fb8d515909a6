#include "core/comm/gloo.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <signal.h>

#include <cstdlib>

#include "core/base/error.h"

namespace dcpp {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int EnvInt(const char* name) {
  const std::string v = Env(name);
  DCPP_CHECK(!v.empty(), "environment variable ", name, " is not set (launch with torchrun)");
  try {
    size_t used = 0;
    const int n = std::stoi(v, &used);
    if (used == v.size()) return n;
  } catch (const std::exception&) {
  }
  throw Error(StrCat("environment variable ", name, "='", v, "' is not an integer"));
}

// gloo and the TCPStore write to sockets without MSG_NOSIGNAL, so a peer that dies mid-collective
// raises SIGPIPE, whose default action kills this process silently instead of letting the
// collective fail with an error naming the peer. Python ignores SIGPIPE for the same reason;
// we do too, unless the program already installed a handler of its own.
void IgnoreDefaultSigpipe() {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout,
                                                  const std::string& host) {
  IgnoreDefaultSigpipe();
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    const std::string ifname = Env("GLOO_SOCKET_IFNAME");
    if (!ifname.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (!host.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    opts->threads = 2;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("dcpp/", store);
    return c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, opts);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(StrCat("cannot create the gloo process group (rank ", rank, " of ", size, "): ",
                       ErrorMessage(e)));
  }
}

bool LaunchedByTorchrun() { return !Env("RANK").empty() && !Env("WORLD_SIZE").empty(); }

std::unique_ptr<C10dComm> CommFromTorchrunEnv(std::chrono::milliseconds timeout) {
  IgnoreDefaultSigpipe();
  const int rank = EnvInt("RANK");
  const int world = EnvInt("WORLD_SIZE");
  DCPP_CHECK(world >= 1 && rank >= 0 && rank < world, "RANK=", rank, " outside WORLD_SIZE=", world);
  std::string addr = Env("MASTER_ADDR");
  if (addr.empty()) addr = "127.0.0.1";
  const int port = EnvInt("MASTER_PORT");
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  // torchrun's agent hosts the store itself when it says so; otherwise rank 0 hosts it.
  so.isServer = rank == 0 && Env("TORCHELASTIC_USE_AGENT_STORE") != "True";
  so.numWorkers = world;
  so.waitWorkers = false;
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    throw Error(StrCat("rendezvous at ", addr, ":", port, " failed on rank ", rank, ": ",
                       ErrorMessage(e)));
  }
  const bool loopback = addr == "127.0.0.1" || addr == "localhost" || addr == "::1";
  auto backend = MakeGlooBackend(store, rank, world, timeout, loopback ? "127.0.0.1" : "");
  return std::make_unique<C10dComm>(backend, c10::Device(c10::kCPU), timeout);
}

}  // namespace dcpp
