// small_tensors: many small tensors, the shape of real optimizer states and norms: --small
// (default 10,000) float32 tensors of shape [3] plus --large (default 4) float32 [1024, 1024]
// ones, saved to and loaded from /dev/shm by dcpp, against PyTorch DCP on the same tensors in
// the same run (bench/dcp_baseline.py in a Python child, at its best configuration:
// FileSystemWriter thread_count 1, 2 and 4; FileSystemReader has no options in torch 2.11).
// Also dcpp's convert() of that checkpoint (fsdp_to_tp to 1 rank, every key copied whole,
// every checksum verified) against dcp.load.
//
//   bazel run -c opt //bench:small_tensors [-- --small=10000 --large=4 --reps=3 --skip_dcp]
//
// Every dcpp timing is the median of --reps runs (the spread is printed); thread_count 1 and
// 2 are tried and the better median is kept. DCP's figures are its best of --reps.
//   small_save_vs_dcp      DCP save time (best thread_count) / dcpp save time     target >= 3
//   small_load_vs_dcp      DCP load time / dcpp load time                          target >= 3
//   small_convert_vs_dcp_load  DCP load time / dcpp convert time
//   small_save_us_per_item, small_load_us_per_item   dcpp time per tensor (information)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/dcpp.h"
#include "core/tools/convert.h"

namespace {

using namespace dcpp_bench;

constexpr int kThreadCounts[] = {1, 2};
constexpr const char* kDcpThreadCounts = "1,2,4";

// Optimizer-state-like keys: for each small tensor i, "optim.state.layers.<i/4>.norm<i%4>.exp_avg"
// ([3] float32); then the large ones "model.layers.<j>.weight" ([1024, 1024] float32).
std::vector<Spec> MakeSpecs(int small, int large) {
  std::vector<Spec> specs;
  for (int i = 0; i < small; ++i) {
    specs.push_back({"optim.state.layers." + std::to_string(i / 4) + ".norm" + std::to_string(i % 4) + ".exp_avg",
                     at::kFloat, {3}});
  }
  for (int j = 0; j < large; ++j) specs.push_back({"model.layers." + std::to_string(j) + ".weight", at::kFloat, {1024, 1024}});
  return specs;
}

struct Stat {
  double median = 0, lo = 0, hi = 0;
};

Stat Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

int Main(int argc, char** argv) {
  std::string script = "bench/dcp_baseline.py";
  int small = 10000, large = 4, reps = 3;
  bool skip_dcp = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--small=", 0) == 0) {
      small = std::stoi(a.substr(8));
    } else if (a.rfind("--large=", 0) == 0) {
      large = std::stoi(a.substr(8));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::max(1, std::stoi(a.substr(7)));
    } else if (a == "--skip_dcp") {
      skip_dcp = true;
    } else if (a.rfind("--", 0) != 0) {
      script = a;
    } else {
      std::cerr << "usage: small_tensors [DCP_SCRIPT] [--small=N] [--large=N] [--reps=N] [--skip_dcp]\n";
      return 2;
    }
  }
  at::set_num_threads(1);

  ScratchDir scratch("small_tensors");
  const std::vector<Spec> specs = MakeSpecs(small, large);
  int64_t bytes = 0;
  for (const Spec& s : specs) bytes += s.nbytes();
  const size_t items = specs.size();
  std::printf("small_tensors: %d x [3] float32 + %d x [1024, 1024] float32, %zu tensors, %.1f MiB, in %s, "
              "median of %d\n", small, large, items, MiB(bytes), scratch.path().c_str(), reps);

  std::vector<at::Tensor> src, dst;
  dcpp::StateDict src_sd, dst_sd;
  for (size_t i = 0; i < specs.size(); ++i) {
    src.push_back(GoldenTensor(specs[i], i));
    dst.push_back(at::zeros(specs[i].shape, at::kFloat));
    src_sd.AddTensor(specs[i].name, src.back());
    dst_sd.AddTensor(specs[i].name, dst.back());
  }
  auto check = [&](const char* what) {
    for (size_t i = 0; i < src.size(); ++i) {
      if (!at::equal(src[i], dst[i])) throw std::runtime_error(std::string(what) + " gave wrong data for " + specs[i].name);
    }
    for (at::Tensor& t : dst) t.zero_();
  };

  const std::string ckpt = scratch.Sub("dcpp");
  const std::string conv = scratch.Sub("converted");
  std::map<int, std::vector<double>> save_t, load_t;
  for (int rep = 0; rep < reps; ++rep) {
    for (int threads : kThreadCounts) {
      dcpp::SaveOptions so;
      so.thread_count = threads;
      dcpp::LoadOptions lo;
      lo.thread_count = threads;
      std::filesystem::remove_all(ckpt);
      save_t[threads].push_back(Time([&] { dcpp::save(src_sd, ckpt, so); }));
      load_t[threads].push_back(Time([&] { dcpp::load(dst_sd, ckpt, lo); }));
      if (rep == 0) check("dcpp load");
    }
  }
  // convert() of the last checkpoint (saved with the largest thread count): every key whole on
  // one target rank, read, verified, written with its checksum and committed.
  std::vector<double> conv_t;
  for (int rep = 0; rep < reps; ++rep) {
    std::filesystem::remove_all(conv);
    dcpp::ConvertOptions co;
    co.world_size = 1;
    conv_t.push_back(Time([&] { dcpp::convert(ckpt, conv, co); }));
  }
  {
    dcpp::load(dst_sd, conv, dcpp::LoadOptions());
    check("load of the converted checkpoint");
  }

  auto best_of_threads = [&](std::map<int, std::vector<double>>& m, int* which) {
    Stat best{1e300, 0, 0};
    for (auto& [t, v] : m) {
      const Stat s = Summarize(v);
      if (s.median < best.median) {
        best = s;
        *which = t;
      }
    }
    return best;
  };
  for (int t : kThreadCounts) {
    const Stat s = Summarize(save_t[t]), l = Summarize(load_t[t]);
    std::printf("dcpp threads=%d  save %7.4f s (%.4f-%.4f)  load %7.4f s (%.4f-%.4f)\n", t, s.median, s.lo, s.hi,
                l.median, l.lo, l.hi);
  }
  int save_threads = 0, load_threads = 0;
  const Stat save = best_of_threads(save_t, &save_threads);
  const Stat load = best_of_threads(load_t, &load_threads);
  const Stat cv = Summarize(conv_t);
  std::printf("dcpp convert (1 rank)  %7.4f s (%.4f-%.4f)\n", cv.median, cv.lo, cv.hi);
  std::printf("dcpp best: save %.4f s (thread_count %d), load %.4f s (thread_count %d); per tensor: save %.1f us, "
              "load %.1f us, convert %.1f us\n", save.median, save_threads, load.median, load_threads,
              save.median / items * 1e6, load.median / items * 1e6, cv.median / items * 1e6);

  double dcp_save = 0, dcp_load = 0;
  if (!skip_dcp) {
    const std::string spec_path = scratch.Sub("spec.json");
    WriteSpecJson(spec_path, specs);
    const std::string cmd = PythonCommand(script) + " " + Quote(spec_path) + " " + Quote(scratch.Sub("dcp")) + " " +
                            std::to_string(reps) + " " + kDcpThreadCounts;
    const nlohmann::json r = nlohmann::json::parse(RunTagged(cmd, "DCP_RESULT "));
    if (r["bytes"].get<int64_t>() != bytes) throw std::runtime_error("the DCP script built other tensors");
    dcp_save = 1e300;
    std::string best_t;
    for (auto& [k, v] : r["save"].items()) {
      if (v.get<double>() < dcp_save) {
        dcp_save = v.get<double>();
        best_t = k;
      }
    }
    dcp_load = r["load"].get<double>();
    std::printf("dcp best: save %.4f s (FileSystemWriter thread_count %s of %s), load %.4f s "
                "(FileSystemReader: no options in this torch)\n", dcp_save, best_t.c_str(), kDcpThreadCounts, dcp_load);
    std::printf("BASELINE PyTorch DCP on the %lld items: dcp.save %.4f s (thread_count %s), dcp.load %.4f s\n",
                static_cast<long long>(items), dcp_save, best_t.c_str(), dcp_load);
    std::printf("BENCH small_save_vs_dcp %.3f ratio\n", dcp_save / save.median);
    std::printf("BENCH small_load_vs_dcp %.3f ratio\n", dcp_load / load.median);
    std::printf("BENCH small_convert_vs_dcp_load %.3f ratio\n", dcp_load / cv.median);
  }
  std::printf("BENCH small_save_us_per_item %.2f us\n", save.median / items * 1e6);
  std::printf("BENCH small_load_us_per_item %.2f us\n", load.median / items * 1e6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("small_tensors", Main, argc, argv); }
