// ParallelFor: the one fork-join of the code base. Runs fn(0) ... fn(n - 1) at once, fn(0) on
// the calling thread and each other on a thread of its own, waits for all, and rethrows the
// first failure (by index). For the few long jobs of a save, load, convert or verify (one per
// I/O thread), where a thread per job costs nothing next to the I/O.
#pragma once

#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace dcpp {

inline void ParallelFor(int n, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(n > 0 ? n : 0);
  auto run = [&](int t) {
    try {
      fn(t);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < n; ++t) threads.emplace_back(run, t);
  if (n > 0) run(0);
  for (auto& th : threads) th.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace dcpp
