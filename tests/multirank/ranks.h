// Test harness: runs a function on `world` ranks, one thread each, joined by a real gloo
// process group over an in-process c10d HashStore — the setup c10d's own ProcessGroupGloo
// tests use. Every collective is bounded by `timeout`, so a broken test fails, never hangs.
#pragma once

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/base/error.h"
#include "core/comm/gloo.h"

namespace dcpp::testing {

// Returns each rank's error message ("" when it succeeded).
inline std::vector<std::string> RunRanks(int world, const std::function<void(int rank, Comm& comm)>& fn,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  // c10d's flight recorder is one per process and not safe for several groups recording from
  // threads at once (a crash seen in torch 2.11 with 3 ranks); real ranks are processes, so
  // switch it off here. (Read once, when the first group is made.)
  ::setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        C10dComm comm(MakeGlooBackend(store, r, world, timeout), c10::Device(c10::kCPU), timeout);
        fn(r, comm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
        if (errors[r].empty()) errors[r] = "(empty error)";
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

inline std::string Joined(const std::vector<std::string>& errors) {
  std::string s;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r].empty()) s += "rank " + std::to_string(r) + ": " + errors[r] + "\n";
  }
  return s;
}

}  // namespace dcpp::testing
