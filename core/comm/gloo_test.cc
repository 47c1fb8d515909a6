// The rendezvous and collective bounds of dcpp's gloo groups, on one host: a store nobody
// serves, a peer that never arrives, a peer that stops taking part. Each must fail within its
// own timeout with an error that names the address, the missing rank and what to set.
#include "core/comm/gloo.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <cstdlib>
#include <future>
#include <iostream>
#include <thread>

#include "core/base/error.h"

namespace dcpp {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A TCP port on 127.0.0.1 that nobody listens on (bound, then released).
int UnusedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

TEST(CommFromTorchrunEnv, UnservedStoreFailsWithinTheRendezvousBoundNamingAddressAndVariables) {
  ::setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  const int port = UnusedPort();
  setenv("RANK", "1", 1);  // a client: rank 0 (the store's host) never comes
  setenv("WORLD_SIZE", "2", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  unsetenv("TORCHELASTIC_USE_AGENT_STORE");
  setenv(kRendezvousTimeoutEnv, "1.5", 1);
  setenv(kCollectiveTimeoutEnv, "600", 1);
  const auto start = Clock::now();
  std::string error;
  try {
    CommFromTorchrunEnv();
  } catch (const Error& e) {
    error = e.what();
  }
  const double took = SecondsSince(start);
  unsetenv(kRendezvousTimeoutEnv);
  unsetenv(kCollectiveTimeoutEnv);
  std::cout << "took " << took << " s: " << error << "\n";
  ASSERT_FALSE(error.empty()) << "joined a store nobody serves";
  EXPECT_LT(took, 1.5 + 0.5) << error;  // the rendezvous bound, not the collective one
  EXPECT_NE(error.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << error;
  EXPECT_NE(error.find("MASTER_ADDR"), std::string::npos) << error;
  EXPECT_NE(error.find(kRendezvousTimeoutEnv), std::string::npos) << error;
}

TEST(MakeGlooBackend, AbsentPeerIsNamedWithinTheRendezvousBound) {
  ::setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  unsetenv("GLOO_SOCKET_IFNAME");
  auto store = c10::make_intrusive<c10d::HashStore>();
  GlooOptions o;
  o.host = "127.0.0.1";
  o.rendezvous_timeout = milliseconds(1500);
  const auto start = Clock::now();
  std::string error;
  try {
    MakeGlooBackend(store, 0, 3, o, "the test's HashStore");  // ranks 1 and 2 never come
  } catch (const Error& e) {
    error = e.what();
  }
  const double took = SecondsSince(start);
  std::cout << "took " << took << " s: " << error << "\n";
  ASSERT_FALSE(error.empty());
  EXPECT_LT(took, 1.5 + 1.0) << error;
  EXPECT_NE(error.find("rank(s) 1, 2 never published"), std::string::npos) << error;
  EXPECT_NE(error.find("the test's HashStore"), std::string::npos) << error;
  EXPECT_NE(error.find("GLOO_SOCKET_IFNAME"), std::string::npos) << error;
  EXPECT_NE(error.find("'127.0.0.1'"), std::string::npos) << error;  // what this rank bound
}

TEST(C10dComm, CollectiveTimeoutIsSeparateAndALaterCollectiveFailsAtOnce) {
  ::setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  unsetenv("GLOO_SOCKET_IFNAME");
  auto store = c10::make_intrusive<c10d::HashStore>();
  GlooOptions o;
  o.host = "127.0.0.1";
  o.rendezvous_timeout = milliseconds(30000);
  o.collective_timeout = milliseconds(1000);
  std::promise<void> rank0_done;
  std::shared_future<void> done = rank0_done.get_future().share();
  // Rank 1 joins, then stays silent (connections open) until rank 0 has finished.
  std::thread silent([&] {
    auto b = MakeGlooBackend(store, 1, 2, o);
    done.wait();
  });
  auto b0 = MakeGlooBackend(store, 0, 2, o);
  C10dComm comm(b0, c10::Device(c10::kCPU), milliseconds(1000));
  auto start = Clock::now();
  std::string first;
  try {
    comm.AllGather("x");
  } catch (const Error& e) {
    first = e.what();
  }
  const double took = SecondsSince(start);
  start = Clock::now();
  std::string second;
  try {
    comm.Broadcast("y", 0);
  } catch (const Error& e) {
    second = e.what();
  }
  const double took_second = SecondsSince(start);
  rank0_done.set_value();
  silent.join();
  ASSERT_FALSE(first.empty()) << "a collective with a silent peer completed";
  EXPECT_GE(took, 0.9) << first;
  EXPECT_LT(took, 1.0 + 1.5) << first;
  EXPECT_NE(first.find("DCPP_COLLECTIVE_TIMEOUT_S"), std::string::npos) << first;
  EXPECT_NE(first.find("on rank 0 of 2 got no answer within the collective timeout of 1 s"),
            std::string::npos) << first;
  ASSERT_FALSE(second.empty());
  EXPECT_LT(took_second, 0.5) << second;
  EXPECT_NE(second.find("earlier collective"), std::string::npos) << second;
  EXPECT_NE(second.find(first), std::string::npos) << second;
}

// A peer whose group goes away (a killed process) closes its connections: the collective
// fails at once, well inside a long timeout, and says it failed rather than timed out.
TEST(C10dComm, APeerThatClosesItsConnectionsFailsTheCollectiveAtOnce) {
  ::setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  unsetenv("GLOO_SOCKET_IFNAME");
  auto store = c10::make_intrusive<c10d::HashStore>();
  GlooOptions o;
  o.host = "127.0.0.1";
  o.rendezvous_timeout = milliseconds(30000);
  o.collective_timeout = milliseconds(30000);
  std::promise<void> joined;
  std::thread leaving([&] {
    auto b = MakeGlooBackend(store, 1, 2, o);
    joined.set_value();
    b.reset();  // the last reference: gloo's context and its connections close
  });
  auto b0 = MakeGlooBackend(store, 0, 2, o);
  joined.get_future().wait();
  leaving.join();
  C10dComm comm(b0, c10::Device(c10::kCPU), o.collective_timeout);
  const auto start = Clock::now();
  std::string error;
  try {
    comm.AllGather("x");
  } catch (const Error& e) {
    error = e.what();
  }
  const double took = SecondsSince(start);
  ASSERT_FALSE(error.empty()) << "a collective with a departed peer completed";
  EXPECT_LT(took, 10.0) << error;
  EXPECT_NE(error.find("collective allgather(lengths) failed on rank 0 of 2 after "), std::string::npos)
      << error;
  EXPECT_NE(error.find("within the collective timeout of 30 s"), std::string::npos) << error;
  EXPECT_NE(error.find("a peer failed or closed its connection"), std::string::npos) << error;
  EXPECT_EQ(error.find("no answer"), std::string::npos) << error;
}

TEST(MakeGlooBackend, SeveralInterfacesGiveOneDeviceEachAndCollectivesWork) {
  ::setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  unsetenv("GLOO_SOCKET_IFNAME");
  const std::string lo = "lo";  // Linux's loopback interface
  auto store = c10::make_intrusive<c10d::HashStore>();
  GlooOptions o;
  o.interfaces = {lo, lo};  // as GLOO_SOCKET_IFNAME=lo,lo: two gloo devices per rank
  o.rendezvous_timeout = milliseconds(30000);
  o.collective_timeout = milliseconds(30000);
  std::vector<std::vector<std::string>> got(3);
  std::vector<std::string> errors(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r) {
    ranks.emplace_back([&, r] {
      try {
        auto backend = MakeGlooBackend(store, r, 3, o);
        ASSERT_EQ(backend->getBackendName(), "gloo");
        EXPECT_EQ(static_cast<c10d::ProcessGroupGloo&>(*backend).getOptions()->devices.size(), 2u);
        C10dComm comm(backend, c10::Device(c10::kCPU), o.collective_timeout);
        for (int round = 0; round < 3; ++round) got[r] = comm.AllGather("r" + std::to_string(r * 10 + round));
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(got[r], std::vector<std::string>({"r2", "r12", "r22"})) << "rank " << r;
  }
}

}  // namespace
}  // namespace dcpp
