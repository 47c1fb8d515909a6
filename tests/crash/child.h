// Child processes for the crash test: started in a process group of their own (so a SIGKILL
// reaches anything they start), output to a log file, waited for with a deadline.
//
// Thread-safety: none; one thread drives its children. A Child does not own its process:
// call Wait (or Kill then Wait) before dropping it.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "core/base/error.h"

extern char** environ;

namespace dcpp::crash {

using Clock = std::chrono::steady_clock;

struct Child {
  pid_t pid = -1;
  std::string log;  // its stdout and stderr
  int status = 0;
  bool done = false;

  // True once it has ended (reaped).
  bool Poll() {
    if (!done && ::waitpid(pid, &status, WNOHANG) == pid) done = true;
    return done;
  }
  void Kill() {
    if (!done) ::kill(-pid, SIGKILL);
  }
  bool ExitedOk() const { return done && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  bool Killed() const { return done && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }
  // "exit 1", "signal 9 (Killed)".
  std::string Describe() const {
    if (!done) return "running";
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return StrCat("signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
    return "status " + std::to_string(status);
  }
  std::string Output() const {
    std::ifstream in(log);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

// Starts argv with the environment plus `env` ("NAME=value"). Throws dcpp::Error if it cannot.
inline Child Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                   const std::string& log) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> a, ev;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (auto& s : envs) ev.push_back(const_cast<char*>(s.c_str()));
  ev.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  Child c;
  c.log = log;
  const int rc = posix_spawn(&c.pid, a[0], &fa, &attr, a.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  DCPP_CHECK(rc == 0, "cannot start ", argv[0], ": ", std::strerror(rc));
  return c;
}

// Polls until every child ended or `until`; returns whether all ended.
inline bool WaitUntil(std::vector<Child>& cs, Clock::time_point until) {
  for (;;) {
    bool all = true;
    for (Child& c : cs) all = c.Poll() && all;
    if (all) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

// Kills whatever is left and reaps it.
inline void KillAndReap(std::vector<Child>& cs) {
  for (Child& c : cs) {
    c.Kill();
    if (!c.done) {
      ::waitpid(c.pid, &c.status, 0);
      c.done = true;
    }
  }
}

// A TCP port free on 127.0.0.1 right now.
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

}  // namespace dcpp::crash
