// multirank_save_load: one process vs 4 ranks saving and loading the same ~2 GiB, on /dev/shm.
//
// The state dict: 128 float32 tensors of 2048 x 2048 (16 MiB each, 2 GiB in all), filled with
// a cheap pattern (element [i][r][c] = i * 2048 + r, exact in float32).
//   - single: one process (no comm) saves all of it with dcpp::save and loads it back in place
//     with dcpp::load, default options (thread_count 1); for information it also prints the
//     same with thread_count 2 (not part of the figures);
//   - 4 ranks: 4 threads joined by a real gloo process group over an in-process HashStore (the
//     harness of tests/multirank/ranks.h, copied below because that target is visible to
//     //tests only). Rank r holds the Shard(0) quarter of every tensor (rows r/4 .. (r+1)/4, a
//     contiguous view of the same tensors); all 4 save it collectively (default options each)
//     and load their quarters back in place. The time runs from before the first rank starts
//     to after the last one finishes, so it includes the process group's setup.
// Before every save the folder is emptied and before every load the tensors are zeroed
// (untimed); every load is checked (each row's min and max equal its pattern value, and dcpp
// verifies the chunks' checksums). Timings are the best of --reps (default 2).
//
// On this 2-core machine 4 ranks cannot beat what memory bandwidth allows: a save or load is a
// copy of every byte (plus an XXH3 pass over it), single-threaded in one process; 4 ranks on
// 2 cores can at most use both cores on it and add the collectives (gather/scatter of plans,
// metadata) on top. A ratio of at most ~2 is what this machine can show (about what the single
// process reaches with thread_count 2), and only when nothing else runs on it; on a machine
// with a core per rank and spare bandwidth it would grow.
//
//   bazel run -c opt //bench:multirank_save_load [-- --tensors=128 --dim=2048 --reps=2]
//
// Figures (ratios within this run):
//   multirank4_save_vs_single   single-process save time / 4-rank save time (> 1: 4 ranks faster)
//   multirank4_load_vs_single   single-process load time / 4-rank load time
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "core/comm/gloo.h"
#include "core/dcpp.h"
#include "tests/multirank/ranks.h"

namespace {

using namespace dcpp_bench;

constexpr int kRanks = 4;

void CheckRanks(const std::vector<std::string>& errors, const std::string& what) {
  const std::string s = dcpp::testing::Joined(errors);
  if (!s.empty()) throw std::runtime_error(what + " failed:\n" + s);
}

std::string Name(int i) { return "layers." + std::to_string(i) + ".weight"; }

// Tensor i's expected row values: i * dim + row.
at::Tensor RowValues(int i, int64_t dim) {
  return at::arange(dim, at::kFloat) + static_cast<float>(static_cast<int64_t>(i) * dim);
}

void Fill(std::vector<at::Tensor>& full, int64_t dim) {
  for (size_t i = 0; i < full.size(); ++i) {
    full[i].copy_(RowValues(static_cast<int>(i), dim).unsqueeze(1).expand({dim, dim}));
  }
}

void Zero(std::vector<at::Tensor>& full) {
  for (auto& t : full) t.zero_();
}

void Check(const std::vector<at::Tensor>& full, int64_t dim, const std::string& what) {
  for (size_t i = 0; i < full.size(); ++i) {
    const at::Tensor want = RowValues(static_cast<int>(i), dim);
    if (!at::equal(std::get<0>(full[i].min(1)), want) || !at::equal(std::get<0>(full[i].max(1)), want)) {
      throw std::runtime_error(what + ": " + Name(static_cast<int>(i)) + " has wrong data");
    }
  }
}

int Main(int argc, char** argv) {
  int tensors = 128;
  int64_t dim = 2048;
  int reps = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--tensors=", 0) == 0) {
      tensors = std::stoi(a.substr(10));
    } else if (a.rfind("--dim=", 0) == 0) {
      dim = std::stoll(a.substr(6));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::max(1, std::stoi(a.substr(7)));
    } else {
      std::cerr << "usage: multirank_save_load [--tensors=N] [--dim=N] [--reps=N]\n";
      return 2;
    }
  }
  at::set_num_threads(1);  // the parallelism measured is the ranks'

  ScratchDir scratch("multirank");
  const std::string single_dir = scratch.Sub("single");
  const std::string multi_dir = scratch.Sub("ranks4");
  const int64_t total = static_cast<int64_t>(tensors) * dim * dim * 4;
  std::cout << "multirank_save_load: " << tensors << " x [" << dim << ", " << dim << "] float32 ("
            << MiB(total) << " MiB) in " << scratch.path() << ", best of " << reps << "; "
            << std::thread::hardware_concurrency() << " hardware threads\n";

  std::vector<at::Tensor> full;
  const double gen_s = Time([&] {
    for (int i = 0; i < tensors; ++i) full.push_back(at::empty({dim, dim}, at::kFloat));
    Fill(full, dim);
  });
  std::printf("generated in %.2f s\n", gen_s);

  // ---- one process ----
  dcpp::StateDict single;
  for (int i = 0; i < tensors; ++i) single.AddTensor(Name(i), full[i]);
  dcpp::SaveStats ss;
  const double single_save = BestOf(
      reps, [&] { ResetDir(single_dir); }, [&] { ss = dcpp::save(single, single_dir); });
  if (ss.bytes_written != total) throw std::runtime_error("single save wrote the wrong number of bytes");
  const double single_load = BestOf(
      reps, [&] { Zero(full); }, [&] { dcpp::load(single, single_dir); });
  Check(full, dim, "single load");
  std::printf("single process: save %.3f s (%.2f GB/s, %lld files), load %.3f s (%.2f GB/s)\n", single_save,
              GBps(total, single_save), static_cast<long long>(ss.files), single_load, GBps(total, single_load));
  // For information: the same process with 2 writer / reader threads (both cores).
  dcpp::SaveOptions so2;
  so2.thread_count = 2;
  dcpp::LoadOptions lo2;
  lo2.thread_count = 2;
  const double single2_save = BestOf(
      reps, [&] { ResetDir(single_dir); }, [&] { dcpp::save(single, single_dir, so2); });
  const double single2_load = BestOf(
      reps, [&] { Zero(full); }, [&] { dcpp::load(single, single_dir, lo2); });
  Check(full, dim, "single load, 2 threads");
  std::printf("single process, thread_count 2 (information): save %.3f s (%.2f GB/s), load %.3f s (%.2f GB/s)\n",
              single2_save, GBps(total, single2_save), single2_load, GBps(total, single2_load));
  std::filesystem::remove_all(single_dir);  // keep /dev/shm to one checkpoint at a time

  // ---- 4 ranks, one thread each, Shard(0) quarters of the same tensors ----
  const dcpp::Layout rows = dcpp::Layout::Sharded(kRanks, 0);
  std::vector<dcpp::StateDict> quarter(kRanks);
  for (int r = 0; r < kRanks; ++r) {
    for (int i = 0; i < tensors; ++i) quarter[r].AddSharded(Name(i), full[i], rows, r);
  }
  std::vector<dcpp::SaveStats> rs(kRanks);
  const double multi_save = BestOf(
      reps, [&] { ResetDir(multi_dir); },
      [&] {
        CheckRanks(dcpp::testing::RunRanks(kRanks,
                            [&](int rank, dcpp::Comm& comm) {
                              dcpp::SaveOptions so;
                              so.comm = &comm;
                              rs[rank] = dcpp::save(quarter[rank], multi_dir, so);
                            }),
                   "4-rank save");
      });
  int64_t written = 0, files = 0;
  for (const auto& s : rs) {
    written += s.bytes_written;
    files += s.files;
  }
  if (written != total) throw std::runtime_error("4-rank save wrote the wrong number of bytes");
  std::vector<dcpp::LoadStats> ls(kRanks);
  const double multi_load = BestOf(
      reps, [&] { Zero(full); },
      [&] {
        CheckRanks(dcpp::testing::RunRanks(kRanks,
                            [&](int rank, dcpp::Comm& comm) {
                              dcpp::LoadOptions lo;
                              lo.comm = &comm;
                              ls[rank] = dcpp::load(quarter[rank], multi_dir, lo);
                            }),
                   "4-rank load");
      });
  Check(full, dim, "4-rank load");
  int64_t needed = 0;
  for (const auto& s : ls) needed += s.bytes_needed;
  if (needed != total) throw std::runtime_error("4-rank load needed the wrong number of bytes");
  std::printf("4 ranks (gloo, 1 thread each): save %.3f s (%.2f GB/s, %lld files), load %.3f s (%.2f GB/s)\n",
              multi_save, GBps(total, multi_save), static_cast<long long>(files), multi_load,
              GBps(total, multi_load));
  std::printf("all loads checked; the 4 ranks wrote %.1f MiB and read %.1f MiB\n", MiB(written), MiB(needed));

  // Ratios > 1 mean 4 ranks were faster; bounded by memory bandwidth and 2 cores here.
  std::printf("BASELINE one process (thread_count 1): save %.2f GB/s, load %.2f GB/s\n", GBps(total, single_save),
              GBps(total, single_load));
  std::printf("BENCH multirank4_save_vs_single %.3f ratio\n", single_save / multi_save);
  std::printf("BENCH multirank4_load_vs_single %.3f ratio\n", single_load / multi_load);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("multirank_save_load", Main, argc, argv); }
