#include "core/comm/gloo.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <signal.h>

#include <cstdlib>
#include <future>
#include <optional>
#include <thread>

#include "core/base/error.h"

namespace dcpp {
namespace {

using Clock = std::chrono::steady_clock;

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

std::string Seconds(std::chrono::milliseconds t) { return StrCat(t.count() / 1000.0, " s"); }

// The ranks whose gloo address never reached the store (gloo publishes rank r's under key
// "0/r" for its first device); empty when all arrived or the store cannot say.
std::vector<int> MissingRanks(c10d::Store& store, int size) {
  std::vector<int> missing;
  try {
    for (int r = 0; r < size; ++r) {
      if (!store.check({StrCat("0/", r)})) missing.push_back(r);
    }
  } catch (const std::exception&) {
    return {};
  }
  return missing;
}

std::string ListRanks(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

// Runs `make` on a thread of its own and waits for it until `deadline`: its result, or its
// exception rethrown; nullopt past the deadline. c10d's own waits overshoot their timeouts
// (TCPStore's connect retries after a backoff; gloo's store wait and each connect take one
// timeout each, one after another), so this is what holds the bound. A late thread ends on
// c10d's timeout by itself: it holds its own references.
template <typename T, typename F>
std::optional<T> BeforeDeadline(Clock::time_point deadline, F make) {
  auto result = std::make_shared<std::promise<T>>();
  std::future<T> done = result->get_future();
  std::thread([result, make = std::move(make)]() mutable {
    try {
      result->set_value(make());
    } catch (...) {
      result->set_exception(std::current_exception());
    }
  }).detach();
  if (done.wait_until(deadline) != std::future_status::ready) return std::nullopt;
  return done.get();
}

std::shared_ptr<::gloo::transport::Device> MakeDevice(const GlooBind& bind, size_t i, bool lazy) {
  return bind.interfaces.empty()
             ? c10d::ProcessGroupGloo::createDeviceForHostname(bind.host, lazy)
             : c10d::ProcessGroupGloo::createDeviceForInterface(bind.interfaces[i], lazy);
}

c10::intrusive_ptr<c10d::Backend> MakeGloo(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                           int size, const GlooBind& bind,
                                           std::chrono::milliseconds rendezvous,
                                           std::chrono::milliseconds collective,
                                           Clock::time_point deadline,
                                           const std::string& store_name) {
  IgnoreDefaultSigpipe();
  const std::string where = StrCat("rank ", rank, " of ", size);
  auto opts = c10d::ProcessGroupGloo::Options::create(collective);
  opts->threads = 2;
  const size_t devices = std::max<size_t>(1, bind.interfaces.size());
  try {
    const bool lazy = c10d::getDefaultGlooLazyInit();  // TORCH_GLOO_LAZY_INIT, as in PyTorch
    for (size_t i = 0; i < devices; ++i) opts->devices.push_back(MakeDevice(bind, i, lazy));
  } catch (const std::exception& e) {
    throw Error(StrCat("gloo cannot bind ", bind.why, " on ", where, ": ", ErrorMessage(e),
                       "; set GLOO_SOCKET_IFNAME to this host's interfaces (it has: ",
                       DescribeInterfaces(), ")"));
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  DCPP_CHECK(left.count() > 0, "gloo rendezvous on ", where, ": no time left of the rendezvous timeout (",
             Seconds(rendezvous), ", ", kRendezvousTimeoutEnv, ")");
  // gloo's own waits (the store wait for each peer's address, each connect) get 90% of what is
  // left, so that its error, naming the peer, usually comes first; BeforeDeadline holds the
  // whole bound, since those waits run one after another.
  opts->timeout = std::max(std::chrono::milliseconds(1), left * 9 / 10);
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("dcpp/", store);
  try {
    prefixed->setTimeout(opts->timeout);
  } catch (const std::exception&) {
    // a store without timeouts of its own: gloo passes one with each wait anyway
  }
  std::string failure;
  try {
    auto backend = BeforeDeadline<c10::intrusive_ptr<c10d::Backend>>(deadline, [prefixed, rank, size, opts] {
      return c10::intrusive_ptr<c10d::Backend>(c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, opts));
    });
    if (backend) {
      (*backend)->setTimeout(collective);
      return *backend;
    }
    failure = StrCat("did not complete within the rendezvous timeout of ", Seconds(rendezvous));
  } catch (const std::exception& e) {
    failure = ErrorMessage(e);
  }
  const std::vector<int> missing = MissingRanks(*prefixed, size);
  std::string msg = StrCat("gloo rendezvous failed on ", where, " through ", store_name, ": ");
  if (!missing.empty()) {
    msg += StrCat("rank(s) ", ListRanks(missing), " never published their gloo address (store keys dcpp/0/<rank>)",
                  " — check that every node was started and joins the same MASTER_ADDR:MASTER_PORT",
                  " (or --rdzv-endpoint; with --rdzv-backend=c10d on multi-homed hosts pass",
                  " --local-addr, and --rdzv-conf=is_host=1 on the host of the endpoint); ");
  }
  msg += StrCat("this rank bound ", bind.why,
                "; peers connect to the address each rank binds, so set GLOO_SOCKET_IFNAME",
                " (or GlooOptions::interfaces / host) to an interface the other nodes reach;",
                " rendezvous timeout ", Seconds(rendezvous), " (", kRendezvousTimeoutEnv, "): ", failure);
  throw Error(msg);
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size,
                                                  std::chrono::milliseconds timeout,
                                                  const std::string& host) {
  // `host` keeps its old place: after GLOO_SOCKET_IFNAME, before the hostname.
  const GlooBind bind = ChooseGlooBind(GlooOptions{}, "", host);
  return MakeGloo(store, rank, size, bind, timeout, timeout, Clock::now() + timeout, "the store");
}

c10::intrusive_ptr<c10d::Backend> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size, const GlooOptions& opts,
                                                  const std::string& store_name) {
  const auto rendezvous = TimeoutFrom(opts.rendezvous_timeout, kRendezvousTimeoutEnv, kDefaultRendezvousTimeout);
  const auto collective = TimeoutFrom(opts.collective_timeout, kCollectiveTimeoutEnv, kDefaultCollectiveTimeout);
  const auto deadline = Clock::now() + rendezvous;
  return MakeGloo(store, rank, size, ChooseGlooBind(opts, Env("MASTER_ADDR")), rendezvous,
                  collective, deadline, store_name);
}

bool LaunchedByTorchrun() { return !Env("RANK").empty() && !Env("WORLD_SIZE").empty(); }

std::unique_ptr<C10dComm> CommFromTorchrunEnv(std::chrono::milliseconds timeout) {
  GlooOptions opts;
  opts.rendezvous_timeout = timeout;
  opts.collective_timeout = timeout;
  return CommFromTorchrunEnv(opts);
}

std::unique_ptr<C10dComm> CommFromTorchrunEnv(const GlooOptions& opts) {
  IgnoreDefaultSigpipe();
  const auto rendezvous = TimeoutFrom(opts.rendezvous_timeout, kRendezvousTimeoutEnv, kDefaultRendezvousTimeout);
  const auto collective = TimeoutFrom(opts.collective_timeout, kCollectiveTimeoutEnv, kDefaultCollectiveTimeout);
  const auto deadline = Clock::now() + rendezvous;
  const int rank = EnvInt("RANK");
  const int world = EnvInt("WORLD_SIZE");
  DCPP_CHECK(world >= 1 && rank >= 0 && rank < world, "RANK=", rank, " outside WORLD_SIZE=", world);
  std::string addr = Env("MASTER_ADDR");
  if (addr.empty()) addr = "127.0.0.1";
  const int port = EnvInt("MASTER_PORT");
  const std::string store_name = StrCat("the TCPStore at ", addr, ":", port);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  // torchrun's agent hosts the store itself when it says so; otherwise rank 0 hosts it.
  so.isServer = rank == 0 && Env("TORCHELASTIC_USE_AGENT_STORE") != "True";
  so.numWorkers = world;
  so.waitWorkers = false;
  so.timeout = std::max(std::chrono::milliseconds(1), rendezvous * 9 / 10);  // see BeforeDeadline
  c10::intrusive_ptr<c10d::Store> store;
  try {
    auto made = BeforeDeadline<c10::intrusive_ptr<c10d::Store>>(deadline, [addr, so] {
      return c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::TCPStore>(addr, so));
    });
    if (!made) throw Error(StrCat("no store answered at ", addr, ":", port, " in time"));
    store = *made;
  } catch (const std::exception& e) {
    throw Error(StrCat("rendezvous at ", addr, ":", port, " failed on rank ", rank, " of ", world,
                       so.isServer ? " (hosting the store)" : " (joining the store)",
                       " within the rendezvous timeout of ", Seconds(rendezvous), " (",
                       kRendezvousTimeoutEnv, "): check that MASTER_ADDR and MASTER_PORT (torchrun",
                       " --master-addr/--master-port, or --rdzv-endpoint) name an address this node",
                       " reaches and that rank 0's node is up: ", ErrorMessage(e)));
  }
  const GlooBind bind = ChooseGlooBind(opts, addr, IsLoopbackAddress(addr) ? "127.0.0.1" : "");
  auto backend = MakeGloo(store, rank, world, bind, rendezvous, collective, deadline, store_name);
  return std::make_unique<C10dComm>(backend, c10::Device(c10::kCPU), collective);
}

}  // namespace dcpp
