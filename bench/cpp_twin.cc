// cpp_twin: the C++ API's side of bench/py_save_load.py, the same save and resharded load that
// script times through Python's dcpp.save/dcpp.load, written against core/dcpp.h.
//
// Not a benchmark of its own (bench/all.sh skips it): py_save_load.py starts it, one process
// per rank, under a torchrun-like environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT: the
// rendezvous of CommFromTorchrunEnv, a gloo group as the Python ranks have), right after its
// own runs at that world size, with the same sizes and thread count:
//
//   cpp_twin --dir D --tensors 8 --rows R --cols 4096 --threads 2 --repeat 3
//
// Rank r holds rows [r*R/W, (r+1)*R/W) of each of the float32 tensors "layers.<i>.weight"
// (R x cols, random as in the script: Shard(0)); it saves them into D (native format), then
// loads them into zeroed Shard(1) targets (columns [r*cols/W, (r+1)*cols/W), a resharded
// load), and checks those against the saved values. After one untimed save and load, each
// operation is timed between two barriers as the slowest rank sees it, best of --repeat; rank 0
// prints
//   TWIN {"save": S, "load": L, "ok": true}
// with S and L in seconds, for the script to set against its dcpp.save/dcpp.load times.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/comm/gloo.h"
#include "core/dcpp.h"

namespace {

struct Args {
  std::string dir;
  int tensors = 8;
  int64_t rows = 0;
  int64_t cols = 4096;
  int threads = 2;
  int repeat = 3;
};

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir") {
      a.dir = v;
    } else if (k == "--tensors") {
      a.tensors = std::stoi(v);
    } else if (k == "--rows") {
      a.rows = std::stoll(v);
    } else if (k == "--cols") {
      a.cols = std::stoll(v);
    } else if (k == "--threads") {
      a.threads = std::stoi(v);
    } else if (k == "--repeat") {
      a.repeat = std::stoi(v);
    } else {
      throw std::runtime_error("cpp_twin: unknown argument " + k);
    }
  }
  if (a.dir.empty() || a.rows <= 0) {
    throw std::runtime_error("usage: cpp_twin --dir D --rows R [--tensors 8 --cols 4096 --threads 2 --repeat 3]");
  }
  return a;
}

// A barrier: an all-reduce of no error.
void Barrier(dcpp::Comm& comm) { comm.AllReduceError(""); }

// Seconds `fn` takes between two barriers, as the slowest rank sees it (on rank 0; others get
// their own time).
double Timed(dcpp::Comm& comm, const std::function<void()>& fn) {
  Barrier(comm);
  const double took = dcpp_bench::Time(fn);
  Barrier(comm);
  double slowest = took;
  for (const std::string& s : comm.Gather(std::to_string(took), 0)) slowest = std::max(slowest, std::stod(s));
  return slowest;
}

// Entry `fqn` of shape rows x cols whose only chunk is `box`, held in `t`.
dcpp::TensorEntry Entry(const std::string& fqn, const Args& a, const dcpp::Box& box, const at::Tensor& t) {
  return dcpp::TensorEntry{fqn, at::kFloat, {a.rows, a.cols}, {dcpp::LocalChunk{box, t}}};
}

int Main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  at::set_num_threads(1);  // as the Python ranks (OMP_NUM_THREADS=1)
  std::unique_ptr<dcpp::C10dComm> comm = dcpp::CommFromTorchrunEnv();
  const int rank = comm->rank(), world = comm->size();
  if (a.rows % world != 0 || a.cols % world != 0) throw std::runtime_error("cpp_twin: rows and cols must divide by the world size");
  const int64_t my_rows = a.rows / world, my_cols = a.cols / world;

  at::manual_seed(rank);
  dcpp::StateDict src, dst;
  std::vector<at::Tensor> saved, loaded;
  for (int i = 0; i < a.tensors; ++i) {
    const std::string fqn = "layers." + std::to_string(i) + ".weight";
    saved.push_back(at::rand({my_rows, a.cols}));
    src.Add(Entry(fqn, a, dcpp::Box{{rank * my_rows, 0}, {my_rows, a.cols}}, saved.back()));
    loaded.push_back(at::zeros({a.rows, my_cols}));
    dst.Add(Entry(fqn, a, dcpp::Box{{0, rank * my_cols}, {a.rows, my_cols}}, loaded.back()));
  }

  dcpp::SaveOptions so;
  so.comm = comm.get();
  so.thread_count = a.threads;
  dcpp::LoadOptions lo;
  lo.comm = comm.get();
  lo.thread_count = a.threads;
  // One untimed save and load first: a fresh process writing into a fresh folder pays for
  // memory it has never touched (page faults, and on a VM pages handed back to the host), which
  // the Python ranks, saving over their own earlier checkpoints, no longer do.
  dcpp::save(src, a.dir, so);
  dcpp::load(dst, a.dir, lo);
  double save = 1e300, load = 1e300;
  for (int r = 0; r < a.repeat; ++r) {
    save = std::min(save, Timed(*comm, [&] { dcpp::save(src, a.dir, so); }));
    for (at::Tensor& t : loaded) t.zero_();
    load = std::min(load, Timed(*comm, [&] { dcpp::load(dst, a.dir, lo); }));
  }

  // Every loaded column block must be the saved values: check this rank's own rows of it (the
  // rows it saved), which it can compare without other ranks' data.
  bool ok = true;
  for (int i = 0; i < a.tensors; ++i) {
    ok = ok && at::equal(loaded[i].narrow(0, rank * my_rows, my_rows), saved[i].narrow(1, rank * my_cols, my_cols));
  }
  const std::string bad = comm->AllReduceError(ok ? "" : "rank " + std::to_string(rank) + " loaded wrong values");
  if (rank == 0) {
    std::printf("TWIN {\"save\": %.6f, \"load\": %.6f, \"ok\": %s}\n", save, load, bad.empty() ? "true" : "false");
    std::fflush(stdout);
  }
  return bad.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("cpp_twin", Main, argc, argv); }
