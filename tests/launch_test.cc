// Separate processes: ranks launched with torchrun's variables by this test, and by the real
// torchrun from the installed torch. Every wait is bounded; no process is left behind.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/testing/temp_dir.h"

extern char** environ;

namespace {

std::string Runfile(const std::string& path) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/" + std::getenv("TEST_WORKSPACE") + "/" + path;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

struct Proc {
  pid_t pid = -1;
  std::string out;  // file with its stdout/stderr
  int status = -1;
  double seconds = 0;
};

Proc Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& out) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> a, ev;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (auto& s : envs) ev.push_back(const_cast<char*>(s.c_str()));
  ev.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);  // own group: killable with children
  posix_spawnattr_setpgroup(&attr, 0);
  Proc p;
  p.out = out;
  EXPECT_EQ(posix_spawn(&p.pid, a[0], &fa, &attr, a.data(), ev.data()), 0) << argv[0];
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return p;
}

// Waits for every process until `deadline`; kills the rest (and their children) after it.
void WaitAll(std::vector<Proc>& procs, std::chrono::seconds limit) {
  const auto start = std::chrono::steady_clock::now();
  size_t done = 0;
  while (done < procs.size()) {
    done = 0;
    for (Proc& p : procs) {
      if (p.status != -1) {
        ++done;
        continue;
      }
      int st;
      if (waitpid(p.pid, &st, WNOHANG) == p.pid) {
        p.status = st;
        p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
    }
    if (std::chrono::steady_clock::now() - start > limit) {
      for (Proc& p : procs) {
        if (p.status == -1) {
          kill(-p.pid, SIGKILL);
          waitpid(p.pid, &p.status, 0);
          ADD_FAILURE() << "process " << p.pid << " still running after " << limit.count() << " s; killed";
        }
      }
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// "exit 1", "signal 13 (Broken pipe)": how a process ended, for failure messages.
std::string Describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  }
  return "status " + std::to_string(status);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<Proc> LaunchRanks(int world, const std::string& scenario, const std::string& dir,
                              const std::string& logs, int timeout_ms) {
  const int port = FreePort();
  std::vector<Proc> procs;
  for (int r = 0; r < world; ++r) {
    procs.push_back(Spawn({Runfile("tests/multirank/worker"), scenario, dir},
                          {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r),
                           "WORLD_SIZE=" + std::to_string(world), "MASTER_ADDR=127.0.0.1",
                           "MASTER_PORT=" + std::to_string(port),
                           "DCPP_TEST_TIMEOUT_MS=" + std::to_string(timeout_ms)},
                          logs + "/rank" + std::to_string(r) + ".log"));
  }
  return procs;
}

TEST(Launch, ThreeProcessesFromTorchrunVariables) {
  dcpp::testing::TempDir tmp;
  auto procs = LaunchRanks(3, "roundtrip", tmp / "ckpt", tmp.path(), 60000);
  WaitAll(procs, std::chrono::seconds(120));
  for (size_t r = 0; r < procs.size(); ++r) {
    const std::string out = Slurp(procs[r].out);
    EXPECT_TRUE(WIFEXITED(procs[r].status) && WEXITSTATUS(procs[r].status) == 0) << out;
    EXPECT_NE(out.find("rank " + std::to_string(r) + " of 3 ok"), std::string::npos) << out;
  }
}

TEST(Launch, AKilledRankMakesTheOthersFailWithinTheTimeout) {
  dcpp::testing::TempDir tmp;
  constexpr int kTimeoutMs = 10000;
  auto procs = LaunchRanks(3, "die", tmp / "ckpt", tmp.path(), kTimeoutMs);
  WaitAll(procs, std::chrono::seconds(60));
  EXPECT_EQ(WEXITSTATUS(procs[1].status), 3);
  for (int r : {0, 2}) {
    const std::string out = Slurp(procs[r].out);
    EXPECT_TRUE(WIFEXITED(procs[r].status) && WEXITSTATUS(procs[r].status) == 1)
        << "rank " << r << " " << Describe(procs[r].status) << ": " << out;
    EXPECT_NE(out.find("error:"), std::string::npos) << out;
    EXPECT_LT(procs[r].seconds, kTimeoutMs / 1000.0 + 20) << out;
  }
  EXPECT_FALSE(std::ifstream(tmp / "ckpt/.metadata").good());
}

TEST(Launch, RealTorchrun) {
  std::string python;
  std::getline(std::ifstream(Runfile("../torch/python.txt")), python);
  if (python.empty()) GTEST_SKIP() << "LibTorch did not come from a Python install: no torchrun";
  dcpp::testing::TempDir tmp;
  const int port = FreePort();
  std::vector<Proc> procs = {Spawn({python, "-m", "torch.distributed.run", "--no-python",
                                    "--nproc_per_node=2", "--master_addr=127.0.0.1",
                                    "--master_port=" + std::to_string(port),
                                    Runfile("tests/multirank/worker"), "roundtrip", tmp / "ckpt"},
                                   {"OMP_NUM_THREADS=1"}, tmp / "torchrun.log")};
  WaitAll(procs, std::chrono::seconds(180));
  const std::string out = Slurp(procs[0].out);
  EXPECT_TRUE(WIFEXITED(procs[0].status) && WEXITSTATUS(procs[0].status) == 0) << out;
  EXPECT_NE(out.find("rank 0 of 2 ok"), std::string::npos) << out;
  EXPECT_NE(out.find("rank 1 of 2 ok"), std::string::npos) << out;
}

}  // namespace
