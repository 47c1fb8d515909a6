// multirank_plan_cache: save-plan caching (SaveOptions::plan_caching) in a real 4-rank gloo
// save of many small tensors, the planning phase measured apart from the rest.
//
// 4 ranks (threads joined by a gloo process group over an in-process HashStore, the harness of
// tests/multirank/ranks.h) each hold the Shard(0) quarter of --tensors float32 tensors of
// [64, 16] (4 KiB each; 1 KiB per rank), so a save has 4 x --tensors items. They save into one
// folder on /dev/shm, as a trainer saves every N steps, in --reps pairs:
//   - a save whose plan changed (one key renamed in every pair, on every rank): every rank runs
//     save_local, sends its plan, the coordinator runs save_global and validates (the first
//     save of a run);
//   - the same save again: every rank sends a hash, the coordinator reuses its plan.
// SaveStats::plan_seconds (the slowest rank's) is the planning phase: from building the local
// plan to holding the placed items, the gather and scatter included. The whole save's time is
// printed beside it. After the last pair every rank loads its quarters back and checks them.
//
//   bazel run -c opt //bench:multirank_plan_cache [-- --tensors=10000 --reps=3]
//
// Figures (medians over the pairs; the spread is printed):
//   multirank4_plan_cached_vs_first    planning of the cached save / of the changed save
//   multirank4_save_cached_vs_first    whole cached save / whole changed save
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/dcpp.h"
#include "tests/multirank/ranks.h"

namespace {

using namespace dcpp_bench;

constexpr int kRanks = 4;

struct Pair {
  double first_plan = 0, cached_plan = 0, first_save = 0, cached_save = 0;
  int64_t first_bytes = 0, cached_bytes = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  int tensors = 10000;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--tensors=", 0) == 0) {
      tensors = std::stoi(a.substr(10));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::max(1, std::stoi(a.substr(7)));
    } else {
      std::cerr << "usage: multirank_plan_cache [--tensors=N] [--reps=N]\n";
      return 2;
    }
  }
  at::set_num_threads(1);
  ScratchDir scratch("plancache");
  const std::string dir = scratch.Sub("ckpt");
  std::cout << "multirank_plan_cache: 4 gloo ranks, " << tensors << " tensors [64, 16] float32 Shard(0), "
            << reps << " pairs of saves into " << dir << "\n";

  std::vector<at::Tensor> full;
  for (int i = 0; i < tensors; ++i) full.push_back(at::full({64, 16}, static_cast<float>(i)));
  const dcpp::Layout rows = dcpp::Layout::Sharded(kRanks, 0);
  const auto name = [](int i, int pair) {
    return i == 0 ? "renamed." + std::to_string(pair) : "layers." + std::to_string(i) + ".weight";
  };

  std::vector<Pair> pairs(reps);
  const std::string errors = dcpp::testing::Joined(dcpp::testing::RunRanks(
      kRanks,
      [&](int rank, dcpp::Comm& comm) {
        dcpp::SaveOptions so;
        so.comm = &comm;
        for (int p = 0; p < reps; ++p) {
          dcpp::StateDict sd;
          for (int i = 0; i < tensors; ++i) sd.AddSharded(name(i, p), full[i], rows, rank);
          for (int k = 0; k < 2; ++k) {
            comm.Broadcast("", 0);  // start together
            dcpp::SaveStats st;
            const double t = Time([&] { st = dcpp::save(sd, dir, so); });
            DCPP_CHECK(st.plan_cached == (k == 1), "pair ", p, " save ", k, ": plan_cached is ", st.plan_cached);
            // The slowest rank's figures (each rank writes its own, then rank 0 takes the max).
            const std::vector<std::string> all =
                comm.Gather(std::to_string(st.plan_seconds) + " " + std::to_string(t), 0);
            if (rank == 0) {
              double plan = 0, save = 0;
              for (const std::string& s : all) {
                plan = std::max(plan, std::stod(s.substr(0, s.find(' '))));
                save = std::max(save, std::stod(s.substr(s.find(' ') + 1)));
              }
              (k == 0 ? pairs[p].first_plan : pairs[p].cached_plan) = plan;
              (k == 0 ? pairs[p].first_save : pairs[p].cached_save) = save;
              (k == 0 ? pairs[p].first_bytes : pairs[p].cached_bytes) = st.plan_bytes_gathered;
            }
          }
        }
        // Load the last checkpoint back and check every quarter.
        dcpp::StateDict back;
        std::vector<at::Tensor> mine;
        for (int i = 0; i < tensors; ++i) {
          mine.push_back(at::zeros({16, 16}));
          back.Add(dcpp::TensorEntry{name(i, reps - 1), at::kFloat, {64, 16},
                                     {{dcpp::BoxForRank({64, 16}, rows, rank), mine.back()}}});
        }
        dcpp::LoadOptions lo;
        lo.comm = &comm;
        dcpp::load(back, dir, lo);
        for (int i = 0; i < tensors; ++i) {
          DCPP_CHECK(at::equal(mine[i], at::full({16, 16}, static_cast<float>(i))), "rank ", rank, ": tensor ",
                     i, " differs after load");
        }
      },
      std::chrono::seconds(600)));
  if (!errors.empty()) throw std::runtime_error("4-rank saves failed:\n" + errors);

  std::vector<double> plan_ratio, save_ratio;
  for (int p = 0; p < reps; ++p) {
    const Pair& x = pairs[p];
    std::printf("pair %d: changed save %.1f ms (planning %.1f ms, %.1f KiB gathered), cached save %.1f ms "
                "(planning %.2f ms, %lld bytes gathered)\n",
                p, x.first_save * 1e3, x.first_plan * 1e3, static_cast<double>(x.first_bytes) / 1024,
                x.cached_save * 1e3, x.cached_plan * 1e3, static_cast<long long>(x.cached_bytes));
    plan_ratio.push_back(x.cached_plan / x.first_plan);
    save_ratio.push_back(x.cached_save / x.first_save);
  }
  std::printf("planning ratio: median %.4f, min %.4f, max %.4f; save ratio: median %.3f, min %.3f, max %.3f\n",
              Median(plan_ratio), *std::min_element(plan_ratio.begin(), plan_ratio.end()),
              *std::max_element(plan_ratio.begin(), plan_ratio.end()), Median(save_ratio),
              *std::min_element(save_ratio.begin(), save_ratio.end()),
              *std::max_element(save_ratio.begin(), save_ratio.end()));
  std::cout << "the last checkpoint loaded back and checked on every rank\n";
  std::printf("BENCH multirank4_plan_cached_vs_first %.4f ratio\n", Median(plan_ratio));
  std::printf("BENCH multirank4_save_cached_vs_first %.4f ratio\n", Median(save_ratio));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("multirank_plan_cache", Main, argc, argv); }
