// dcp_load: loading one ~2 GiB checkpoint in PyTorch DCP's own format with dcpp (DcpReader)
// and with PyTorch's torch.distributed.checkpoint.load, in the same run, on /dev/shm.
//
// The checkpoint is written by PyTorch (bench/dcp_load_baseline.py `write`:
// torch.distributed.checkpoint.save, FileSystemWriter defaults, one process, full tensors: a
// consolidated checkpoint, one __0_0.distcp file of torch.save archives). By default: 60
// float32 matrices of 4096 x 2048, 8 bfloat16 ones of the same shape and 8 float32 vectors of
// 4096 (2 GiB). Tensor i holds frac(k * 0.6180339887 + 0.37 * i) at flat element k (computed
// in float32, then cast); both sides check a few rows of every tensor (and of every shard)
// against that formula after loading.
//
//   - single process: PyTorch dcp.load(no_dist=True) in place into preallocated zeroed
//     tensors (a Python process, intra-op threads 1 and 2, the faster is the baseline) vs
//     dcpp::load(sd, DcpReader(dir)) into preallocated zeroed tensors (StateDict::AddTensor),
//     default LoadOptions (thread_count 1); thread_count 2 for information. Also a raw
//     sequential read() of the checkpoint's data files into a preallocated buffer.
//   - 4 ranks: every rank loads the Shard(0) quarter of every tensor. PyTorch: 4 processes
//     (torch.multiprocessing spawn, gloo, CPU), each quarter a DTensor on
//     init_device_mesh("cpu", (4,)), dcp.load. dcpp: 4 threads joined by a real gloo process
//     group (tests/multirank/ranks.h), each AddSharded(Layout::Sharded(4, 0)) views of the same
//     tensors, dcpp::load(sd, DcpReader(dir), {.comm}). Both timed from a barrier before to a
//     barrier after the load, the max over ranks. PyTorch's FileSystemReader torch.loads a
//     stored chunk whole and then narrows it, so on this consolidated checkpoint each of its
//     ranks reads every tensor in full (4x the bytes); dcpp reads only each quarter's rows.
//   - 4 ranks, sharded checkpoint (unless --skip_sharded): the same tensors saved by 4 PyTorch
//     ranks as DTensor Shard(0) slices (`write4`: one file per rank, each slice its own chunk),
//     loaded the same two ways; every rank then reads exactly its own chunks on both sides.
// The Python parts run first (both checkpoints are written, then PyTorch's loads), in
// processes that exit before dcpp allocates its targets.
// Timings are the best of --reps (default 2); targets are zeroed before every timed load.
//
//   bazel run -c opt //bench:dcp_load [-- --reps=2 --tensors=60 --bf16=8 --rows=4096
//                                         --cols=2048 --skip_pytorch --skip_sharded]
//
// Figures (ratios within this run; > 1 means dcpp faster):
//   dcp_load_single_vs_pytorch   PyTorch single-process load time / dcpp's (target >= 3)
//   dcp_load_4ranks_vs_pytorch   PyTorch 4-rank load time / dcpp's (target >= 3)
//   dcp_load_4ranks_sharded_vs_pytorch   the same on the checkpoint saved by 4 ranks
//   dcp_load_single_vs_read      dcpp throughput (tensor bytes / time) / raw read() throughput
//                                (data file bytes / time)
// The Python interpreter is $DCPP_PYTHON, else python3 on the PATH.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "core/comm/gloo.h"
#include "core/dcpp.h"
#include "core/format/metadata.pb.h"
#include "core/storage/dcp/dcp.h"
#include "tests/multirank/ranks.h"

namespace {

using namespace dcpp_bench;

constexpr int kRanks = 4;
constexpr double kGolden = 0.6180339887;

struct Options {
  std::string script = "bench/dcp_load_baseline.py";
  int reps = 2;
  int tensors = 60;  // float32 matrices
  int bf16 = 8;      // bfloat16 matrices
  int64_t rows = 4096, cols = 2048;
  bool skip_pytorch = false;
  bool skip_sharded = false;
};

std::vector<Spec> MakeSpecs(const Options& o) {
  std::vector<Spec> specs;
  for (int i = 0; i < o.tensors; ++i) specs.push_back({"layers." + std::to_string(i) + ".weight", at::kFloat, {o.rows, o.cols}});
  for (int i = 0; i < o.bf16; ++i) specs.push_back({"embed." + std::to_string(i) + ".weight", at::kBFloat16, {o.rows, o.cols}});
  for (int i = 0; i < 8; ++i) specs.push_back({"norms." + std::to_string(i) + ".weight", at::kFloat, {o.rows}});
  return specs;
}

// Rows row .. row+count-1 (dim 0) of tensor i as the Python side generates it.
at::Tensor ExpectedRows(const Spec& s, size_t i, int64_t row, int64_t count) {
  int64_t inner = 1;
  for (size_t d = 1; d < s.shape.size(); ++d) inner *= s.shape[d];
  const int64_t k0 = row * inner;
  at::Tensor t = at::arange(k0, k0 + count * inner, at::TensorOptions().dtype(at::kFloat))
                     .mul_(kGolden)
                     .add_(0.37 * static_cast<double>(i))
                     .frac_();
  std::vector<int64_t> shape = s.shape;
  shape[0] = count;
  return t.to(s.dtype).reshape(shape);
}

// Checks rows of every tensor: in each of the kRanks Shard(0) quarters its first row, one more
// and its last row.
void CheckRows(const std::vector<Spec>& specs, const std::vector<at::Tensor>& full, const std::string& what) {
  for (size_t i = 0; i < specs.size(); ++i) {
    const int64_t n = specs[i].shape[0], per = n / kRanks;
    for (int q = 0; q < kRanks; ++q) {
      for (int64_t r : {int64_t{0}, static_cast<int64_t>(i * 37) % per, per - 1}) {
        const int64_t row = q * per + r;
        if (!at::equal(full[i].narrow(0, row, 1), ExpectedRows(specs[i], i, row, 1))) {
          throw std::runtime_error(what + ": " + specs[i].name + " row " + std::to_string(row) + " has wrong data");
        }
      }
    }
  }
}

void Zero(std::vector<at::Tensor>& ts) {
  for (auto& t : ts) t.zero_();
}

// ---- the Python side ----

// Runs `cmd`, echoing its output, and returns the JSON of its last "DCP_RESULT " line.
nlohmann::json RunPython(const std::string& cmd) {
  return nlohmann::json::parse(RunTagged(cmd + " 2>&1", "DCP_RESULT "));
}

// ---- raw baseline: the data files read sequentially into one preallocated buffer ----

struct DataFile {
  std::string path;
  int64_t size;
};

std::vector<DataFile> DataFiles(const std::string& dir) {
  std::vector<DataFile> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".distcp") {
      out.push_back({e.path().string(), static_cast<int64_t>(e.file_size())});
    }
  }
  std::sort(out.begin(), out.end(), [](const DataFile& a, const DataFile& b) { return a.path < b.path; });
  return out;
}

void RawRead(const std::vector<DataFile>& files, char* buf) {
  constexpr int64_t kPiece = 16 << 20;
  for (const DataFile& f : files) {
    const int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) Fail("open " + f.path);
    for (int64_t off = 0; off < f.size; off += kPiece) {
      ReadAll(fd, buf + off, static_cast<size_t>(std::min(kPiece, f.size - off)));
    }
    ::close(fd);
    buf += f.size;
  }
}

void CheckRanks(const std::vector<std::string>& errors, const std::string& what) {
  const std::string s = dcpp::testing::Joined(errors);
  if (!s.empty()) throw std::runtime_error(what + " failed:\n" + s);
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&](const char* flag) { return a.substr(std::strlen(flag)); };
    if (a.rfind("--reps=", 0) == 0) {
      o.reps = std::max(1, std::stoi(val("--reps=")));
    } else if (a.rfind("--tensors=", 0) == 0) {
      o.tensors = std::stoi(val("--tensors="));
    } else if (a.rfind("--bf16=", 0) == 0) {
      o.bf16 = std::stoi(val("--bf16="));
    } else if (a.rfind("--rows=", 0) == 0) {
      o.rows = std::stoll(val("--rows="));
    } else if (a.rfind("--cols=", 0) == 0) {
      o.cols = std::stoll(val("--cols="));
    } else if (a == "--skip_pytorch") {
      o.skip_pytorch = true;
    } else if (a == "--skip_sharded") {
      o.skip_sharded = true;
    } else if (a.rfind("--", 0) != 0) {
      o.script = a;
    } else {
      std::cerr << "usage: dcp_load [SCRIPT] [--reps=N] [--tensors=N] [--bf16=N] [--rows=N] [--cols=N] "
                   "[--skip_pytorch] [--skip_sharded]\n";
      return 2;
    }
  }
  if (o.rows % (4 * kRanks) != 0) throw std::runtime_error("--rows must be a multiple of 16");
  at::set_num_threads(1);  // dcpp's parallelism is its thread_count / the ranks

  ScratchDir scratch("dcp_load");
  const std::string ckpt = scratch.Sub("ckpt");        // written by 1 process, full tensors
  const std::string sharded = scratch.Sub("sharded");  // written by 4 ranks, Shard(0) slices
  const std::vector<Spec> specs = MakeSpecs(o);
  int64_t bytes = 0;
  for (const Spec& s : specs) bytes += s.nbytes();
  std::cout << "dcp_load: " << specs.size() << " tensors (" << o.tensors << " float32 and " << o.bf16
            << " bfloat16 [" << o.rows << ", " << o.cols << "], 8 float32 [" << o.rows << "]), " << MiB(bytes)
            << " MiB, in " << scratch.path() << ", best of " << o.reps << "; "
            << std::thread::hardware_concurrency() << " hardware threads\n";

  // ---- PyTorch: write the checkpoint, then its loads (processes that exit before ours) ----
  const std::string spec_path = scratch.Sub("spec.json");
  WriteSpecJson(spec_path, specs);
  const std::string py = PythonCommand(o.script);
  const std::string args = " " + Quote(spec_path) + " " + Quote(ckpt);
  const nlohmann::json written = RunPython(py + " write" + args);
  if (written["bytes"].get<int64_t>() != bytes) throw std::runtime_error("the script built other tensors");
  const std::vector<DataFile> files = DataFiles(ckpt);
  int64_t file_bytes = 0;
  for (const DataFile& f : files) file_bytes += f.size;
  std::printf("checkpoint: %zu data file(s), %.1f MiB (tensor bytes + %.1f MiB of torch.save framing), "
              ".metadata %.1f KiB\n",
              files.size(), MiB(file_bytes), MiB(file_bytes - bytes),
              static_cast<double>(std::filesystem::file_size(ckpt + "/.metadata")) / 1024);

  if (!o.skip_sharded) {
    const nlohmann::json w4 = RunPython(py + " write4 " + Quote(spec_path) + " " + Quote(sharded) + " " +
                                        std::to_string(kRanks));
    if (w4["bytes"].get<int64_t>() != bytes) throw std::runtime_error("the script's ranks built other tensors");
    int64_t n = 0;
    for (const DataFile& f : DataFiles(sharded)) n += f.size;
    std::printf("sharded checkpoint: %zu data files, %.1f MiB\n", DataFiles(sharded).size(), MiB(n));
  }

  double py_single = 0, py_ranks = 0, py_sharded = 0;
  if (!o.skip_pytorch) {
    const nlohmann::json single = RunPython(py + " load" + args + " " + std::to_string(o.reps) + " 1,2");
    if (single["bytes"].get<int64_t>() != bytes) throw std::runtime_error("PyTorch loaded other tensors");
    py_single = 1e300;
    for (auto& [k, v] : single["load"].items()) {
      py_single = std::min(py_single, v.get<double>());
      std::printf("pytorch single process, intra-op threads %s: dcp.load %6.3f s %6.2f GB/s\n", k.c_str(),
                  v.get<double>(), GBps(bytes, v.get<double>()));
    }
    const nlohmann::json ranks =
        RunPython(py + " load4" + args + " " + std::to_string(o.reps) + " " + std::to_string(kRanks));
    if (ranks["bytes"].get<int64_t>() != bytes) throw std::runtime_error("PyTorch's ranks loaded other tensors");
    py_ranks = ranks["load"].get<double>();
    std::printf("pytorch %d ranks (gloo, DTensor Shard(0)): dcp.load %6.3f s %6.2f GB/s (max over ranks)\n",
                kRanks, py_ranks, GBps(bytes, py_ranks));
    if (!o.skip_sharded) {
      const nlohmann::json r = RunPython(py + " load4 " + Quote(spec_path) + " " + Quote(sharded) + " " +
                                         std::to_string(o.reps) + " " + std::to_string(kRanks));
      if (r["bytes"].get<int64_t>() != bytes) throw std::runtime_error("PyTorch's ranks loaded other tensors");
      py_sharded = r["load"].get<double>();
      std::printf("pytorch %d ranks, sharded checkpoint: dcp.load %6.3f s %6.2f GB/s (max over ranks)\n", kRanks,
                  py_sharded, GBps(bytes, py_sharded));
    }
  }

  // ---- dcpp, single process ----
  std::vector<at::Tensor> full;
  for (const Spec& s : specs) full.push_back(at::zeros(s.shape, at::TensorOptions().dtype(s.dtype)));
  dcpp::StateDict sd;
  for (size_t i = 0; i < specs.size(); ++i) sd.AddTensor(specs[i].name, full[i]);

  // Metadata translation alone (rank 0's share of every load): the .metadata pickle decoded
  // and each item's torch.save archive header read and parsed (ReadDcpMetadata).
  auto translate = [&](const std::string& dir, size_t* chunks) {
    return BestOf(o.reps, nullptr, [&] {
      dcpp::proto::Metadata md;
      md.ParseFromString(dcpp::DcpReader(dir).ReadMetadata());
      *chunks = 0;
      for (const auto& t : md.tensors()) *chunks += static_cast<size_t>(t.chunks_size());
    });
  };
  size_t chunks = 0, sharded_chunks = 0;
  const double md_s = translate(ckpt, &chunks);
  const double md_sharded_s = o.skip_sharded ? 0 : translate(sharded, &sharded_chunks);

  std::vector<char> raw_buf(static_cast<size_t>(file_bytes), 1);  // touched
  double raw = 1e300, d1 = 1e300, d2 = 1e300;
  dcpp::LoadStats st1, st2;
  for (int rep = 0; rep < o.reps; ++rep) {
    raw = std::min(raw, Time([&] { RawRead(files, raw_buf.data()); }));
    Zero(full);
    d1 = std::min(d1, Time([&] { st1 = dcpp::load(sd, dcpp::DcpReader(ckpt)); }));
    CheckRows(specs, full, "dcpp load");
    Zero(full);
    dcpp::LoadOptions lo2;
    lo2.thread_count = 2;
    d2 = std::min(d2, Time([&] { st2 = dcpp::load(sd, dcpp::DcpReader(ckpt), lo2); }));
    CheckRows(specs, full, "dcpp load, thread_count 2");
  }
  raw_buf = std::vector<char>();
  if (st1.bytes_needed != bytes || st2.bytes_needed != bytes) throw std::runtime_error("dcpp loaded a wrong byte count");
  std::printf("raw read() of the data files (16 MiB calls, 1 thread) %6.3f s %6.2f GB/s\n", raw, GBps(file_bytes, raw));
  std::printf("dcpp single process, thread_count 1: load %6.3f s %6.2f GB/s (%lld reads, %.1f MiB read)\n", d1,
              GBps(bytes, d1), static_cast<long long>(st1.read_calls), MiB(st1.bytes_read));
  std::printf("dcpp single process, thread_count 2 (information): load %6.3f s %6.2f GB/s\n", d2, GBps(bytes, d2));
  std::printf("dcpp metadata translation alone (DcpReader::ReadMetadata, included in the loads): %.4f s for %zu "
              "chunks",
              md_s, chunks);
  if (!o.skip_sharded) std::printf(", %.4f s for the sharded checkpoint's %zu", md_sharded_s, sharded_chunks);
  std::printf("\n");

  // ---- dcpp, 4 ranks: Shard(0) quarters of the same tensors ----
  const dcpp::Layout rows = dcpp::Layout::Sharded(kRanks, 0);
  std::vector<dcpp::StateDict> quarter(kRanks);
  for (int r = 0; r < kRanks; ++r) {
    for (size_t i = 0; i < specs.size(); ++i) quarter[r].AddSharded(specs[i].name, full[i], rows, r);
  }
  // Best of reps of the max over ranks of barrier .. load .. barrier; also the best time of the
  // whole run (threads and process group made) and the bytes the ranks read in all.
  auto load4 = [&](const std::string& dir, const std::string& what, double* with_setup, int64_t* read) {
    double best = 1e300;
    *with_setup = 1e300;
    for (int rep = 0; rep < o.reps; ++rep) {
      Zero(full);
      std::vector<double> per_rank(kRanks, 0);
      std::vector<dcpp::LoadStats> ls(kRanks);
      const double total = Time([&] {
        CheckRanks(dcpp::testing::RunRanks(kRanks,
                                           [&](int rank, dcpp::Comm& comm) {
                                             dcpp::LoadOptions lo;
                                             lo.comm = &comm;
                                             comm.AllReduceError("");  // barrier
                                             const double t0 = Now();
                                             ls[rank] = dcpp::load(quarter[rank], dcpp::DcpReader(dir), lo);
                                             comm.AllReduceError("");  // barrier
                                             per_rank[rank] = Now() - t0;
                                           }),
                   what);
      });
      CheckRows(specs, full, what);
      best = std::min(best, *std::max_element(per_rank.begin(), per_rank.end()));
      *with_setup = std::min(*with_setup, total);
      int64_t needed = 0;
      *read = 0;
      for (const auto& s : ls) {
        needed += s.bytes_needed;
        *read += s.bytes_read;
      }
      if (needed != bytes) throw std::runtime_error(what + ": the ranks loaded a wrong byte count");
    }
    return best;
  };
  double d4_total = 0;
  int64_t read4 = 0;
  const double d4 = load4(ckpt, "dcpp 4-rank load", &d4_total, &read4);
  std::printf("dcpp %d ranks (gloo, 1 thread each): load %6.3f s %6.2f GB/s (max over ranks; %.3f s with process "
              "group setup; %.1f MiB read in all)\n",
              kRanks, d4, GBps(bytes, d4), d4_total, MiB(read4));
  double s4 = 0;
  if (!o.skip_sharded) {
    double s4_total = 0;
    int64_t s4_read = 0;
    s4 = load4(sharded, "dcpp 4-rank load of the sharded checkpoint", &s4_total, &s4_read);
    std::printf("dcpp %d ranks, sharded checkpoint: load %6.3f s %6.2f GB/s (max over ranks; %.3f s with process "
                "group setup; %.1f MiB read in all)\n",
                kRanks, s4, GBps(bytes, s4), s4_total, MiB(s4_read));
  }
  std::printf("all loads checked (rows of every tensor in every quarter)\n");

  if (!o.skip_pytorch) {
    std::printf("best: pytorch single %.3f s, dcpp single %.3f s; pytorch %d ranks %.3f s, dcpp %d ranks %.3f s\n",
                py_single, d1, kRanks, py_ranks, kRanks, d4);
    std::printf("BASELINE PyTorch dcp.load: 1 process %.3f s (%.2f GB/s), %d ranks %.3f s", py_single,
                GBps(bytes, py_single), kRanks, py_ranks);
    if (!o.skip_sharded) std::printf(", %d ranks of the sharded checkpoint %.3f s", kRanks, py_sharded);
    std::printf("\n");
    std::printf("BENCH dcp_load_single_vs_pytorch %.3f ratio\n", py_single / d1);
    std::printf("BENCH dcp_load_4ranks_vs_pytorch %.3f ratio\n", py_ranks / d4);
    if (!o.skip_sharded) std::printf("BENCH dcp_load_4ranks_sharded_vs_pytorch %.3f ratio\n", py_sharded / s4);
  }
  std::printf("BASELINE raw read() of the data files %.2f GB/s (16 MiB calls, 1 thread)\n", GBps(file_bytes, raw));
  std::printf("BENCH dcp_load_single_vs_read %.3f ratio\n", GBps(bytes, d1) / GBps(file_bytes, raw));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("dcp_load", Main, argc, argv); }
