// reshard: load a checkpoint saved row-wise into a column-wise layout, on /dev/shm.
//
// One process saves 8 float32 tensors of 4096 x 4096 (512 MiB) as row-wise shards over 4
// ranks (Layout::Sharded(4, 0), all four ranks' chunks in one StateDict). Then, for each rank r
// of a column-wise layout (Layout::Sharded(4, 1)), it loads a StateDict holding only rank r's
// column chunk of every tensor. Every saved chunk feeds every target, each with a strided
// region (one 4 KiB run per row), so the loads exercise partial reads.
//
//   bazel run -c opt //bench:reshard [-- --tensors=8 --dim=4096 --reps=3]
//
// Figures (best of --reps, best over thread counts 1 and 2, ratios within this run):
//   reshard_read_amplification  sum(bytes_read) / sum(bytes_needed) over the 4 loads; target <= 1.05
//   reshard_load_vs_raw         dcpp throughput (bytes_needed / time of the 4 loads) over plain
//                               sequential read() throughput of the checkpoint's data files into a
//                               preallocated buffer (one thread per file group); target >= 0.9
//   reshard_load_vs_raw_runs    dcpp throughput over that of the same runs read without the
//                               engine: one pread(2) per 4 KiB run, straight into the targets,
//                               from the same thread count (the floor of any reader that reads
//                               only the bytes it needs, one system call per run)
//   reshard_runs_vs_raw         that floor's throughput over the sequential read(): what the
//                               kernel's cost per read call leaves of the sequential speed
// Then an A/B of the batched-read modes (DCPP_READ_BATCH=off|preadv|io_uring, default), each
// load timed in every rep: median [min, max] and the medians' ratio to raw, and the median CPU
// time of the process (less sensitive than wall time to other work on a shared machine).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/storage/native/filesystem.h"

namespace {

using namespace dcpp_bench;

constexpr int kRanks = 4;
constexpr int kThreadCounts[] = {1, 2};

std::string Name(int i) { return "layers." + std::to_string(i) + ".weight"; }

// Rank r's column-chunk targets: preallocated (touched) tensors, or unallocated ones that
// load() allocates.
dcpp::StateDict Targets(int tensors, int64_t dim, int rank, bool preallocate) {
  dcpp::StateDict sd;
  for (int i = 0; i < tensors; ++i) {
    sd.AddUnallocated(Name(i), at::kFloat, {dim, dim}, dcpp::Layout::Sharded(kRanks, 1), rank);
    if (preallocate) {
      dcpp::LocalChunk& c = sd.FindTensor(Name(i))->chunks.at(0);
      c.tensor = at::zeros(c.box.sizes, at::kFloat);
    }
  }
  return sd;
}

// One run of a column-wise load: `length` bytes at `offset` of data file `file`, into `dst`.
struct Run {
  size_t file;
  uint64_t offset;
  size_t length;
  uint8_t* dst;
};

// The runs a load into `targets` (one rank's column chunks, float32) reads, split over
// `threads` lists (chunk by chunk, round robin), from the checkpoint's metadata: every row of
// every saved (row-wise) chunk gives the run of the target's columns, 4 KiB at the defaults.
std::vector<std::vector<Run>> LoadRuns(const dcpp::proto::Metadata& md, const std::vector<std::string>& files,
                                     dcpp::StateDict& targets, int threads) {
  std::vector<std::vector<Run>> out(static_cast<size_t>(threads));
  size_t next = 0;
  for (const dcpp::proto::TensorMeta& t : md.tensors()) {
    const dcpp::LocalChunk& target = targets.FindTensor(t.fqn())->chunks.at(0);
    const int64_t dim = t.shape(1), c0 = target.box.offsets[1], cw = target.box.sizes[1];
    uint8_t* base = static_cast<uint8_t*>(target.tensor.data_ptr());
    for (const dcpp::proto::ChunkMeta& c : t.chunks()) {
      if (c.offsets(1) != 0 || c.sizes(1) != dim) throw std::runtime_error("saved chunks are not row-wise");
      const auto f = std::find_if(files.begin(), files.end(), [&](const std::string& p) {
        return std::filesystem::path(p).filename() == c.file();
      });
      if (f == files.end()) throw std::runtime_error("no data file " + c.file());
      std::vector<Run>& list = out[next++ % out.size()];
      for (int64_t row = 0; row < c.sizes(0); ++row) {
        list.push_back({static_cast<size_t>(f - files.begin()), c.offset() + static_cast<uint64_t>((row * dim + c0) * 4),
                        static_cast<size_t>(cw * 4), base + (c.offsets(0) + row) * cw * 4});
      }
    }
  }
  return out;
}

// CPU seconds of the whole process (every thread, io_uring's workers included) so far.
double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

int Main(int argc, char** argv) {
  int tensors = 8;
  int64_t dim = 4096;
  int reps = 3;
  std::string dir;    // where the checkpoint goes (default /dev/shm)
  bool cold = false;  // drop the data files from the page cache before every timed read
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--tensors=", 0) == 0) {
      tensors = std::stoi(a.substr(10));
    } else if (a.rfind("--dim=", 0) == 0) {
      dim = std::stoll(a.substr(6));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::stoi(a.substr(7));
    } else if (a.rfind("--dir=", 0) == 0) {
      dir = a.substr(6);
    } else if (a == "--cold") {
      cold = true;
    } else {
      std::cerr << "usage: reshard [--tensors=N] [--dim=N] [--reps=N] [--dir=PATH] [--cold]\n";
      return 2;
    }
  }
  at::set_num_threads(1);  // the benchmark's parallelism is the engine's thread_count

  ScratchDir scratch("reshard", dir);
  const std::string ckpt = scratch.Sub("ckpt");
  const int64_t total = static_cast<int64_t>(tensors) * dim * dim * 4;
  std::cout << "reshard: " << tensors << " x [" << dim << ", " << dim << "] float32 (" << MiB(total)
            << " MiB), saved as Shard(0)@[4], loaded as Shard(1)@[4], in " << scratch.path()
            << ", best of " << reps << (cold ? ", page cache dropped before every timed read" : "") << "\n";

  // Save: every rank's row chunk in one state dict, two writer threads (two files).
  at::manual_seed(7);
  std::vector<at::Tensor> full;
  dcpp::StateDict src;
  for (int i = 0; i < tensors; ++i) {
    full.push_back(at::rand({dim, dim}, at::kFloat));
    for (int r = 0; r < kRanks; ++r) src.AddSharded(Name(i), full[i], dcpp::Layout::Sharded(kRanks, 0), r);
  }
  dcpp::SaveOptions so;
  so.thread_count = 2;
  const dcpp::SaveStats ss = dcpp::save(src, ckpt, so);
  std::cout << "saved " << ss.items_written << " chunks into " << ss.files << " files\n";

  // Correctness and byte counts, loading into unallocated targets.
  int64_t needed = 0, read = 0, calls = 0;
  for (int r = 0; r < kRanks; ++r) {
    dcpp::StateDict sd = Targets(tensors, dim, r, /*preallocate=*/false);
    const dcpp::LoadStats st = dcpp::load(sd, ckpt);
    needed += st.bytes_needed;
    read += st.bytes_read;
    calls += st.read_calls;
    for (int i = 0; i < tensors; ++i) {
      const dcpp::LocalChunk& c = sd.FindTensor(Name(i))->chunks.at(0);
      if (!at::equal(c.tensor, full[i].narrow(1, c.box.offsets[1], c.box.sizes[1]))) {
        throw std::runtime_error("rank " + std::to_string(r) + " got wrong data for " + Name(i));
      }
    }
  }
  if (needed != total) throw std::runtime_error("bytes_needed does not add up to the tensors' bytes");
  std::printf("4 loads: needed %.1f MiB, read %.1f MiB in %lld read calls (%.1f KiB each)\n", MiB(needed),
              MiB(read), static_cast<long long>(calls), static_cast<double>(read) / calls / 1024);

  // Raw baseline: the data files, read sequentially with read() into a preallocated buffer.
  std::vector<std::string> files;
  std::vector<int64_t> file_bytes;
  int64_t raw_bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(ckpt)) {
    if (e.path().extension() == ".distcp") {
      files.push_back(e.path().string());
      file_bytes.push_back(static_cast<int64_t>(e.file_size()));
      raw_bytes += file_bytes.back();
    }
  }
  at::Tensor buffer = at::zeros({raw_bytes}, at::kByte);
  std::vector<int64_t> file_offset(files.size(), 0);
  for (size_t f = 1; f < files.size(); ++f) file_offset[f] = file_offset[f - 1] + file_bytes[f - 1];

  // --cold: the data files out of the page cache (they were synced by the save).
  auto drop_cache = [&] {
    if (!cold) return;
    for (const std::string& f : files) {
      const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) Fail("open " + f);
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
    }
  };

  // Raw reads and dcpp loads, interleaved rep by rep so that background load on a shared
  // machine hits both alike. The loads run once per batched-read mode (DCPP_READ_BATCH, core/
  // storage/batch_read.h) in each rep: the default, then off (one pread per merged run, as
  // before batching), preadv and io_uring, for the A/B below.
  const std::vector<std::string> modes = {"", "off", "preadv", "io_uring"};
  std::map<int, double> raw, raw_runs, dc;
  std::map<int, std::vector<double>> raw_all, raw_cpu, runs_all, runs_cpu;  // wall and CPU seconds
  std::map<std::string, std::map<int, std::vector<double>>> mode_all, mode_cpu;
  std::map<int, std::vector<dcpp::StateDict>> targets;
  std::map<int, std::vector<std::vector<std::vector<Run>>>> runs;  // [threads][rank][thread]
  const dcpp::proto::Metadata md = dcpp::ParseMetadata(dcpp::FileSystemReader(ckpt).ReadMetadata(), ckpt);
  for (int threads : kThreadCounts) {
    for (int r = 0; r < kRanks; ++r) {
      targets[threads].push_back(Targets(tensors, dim, r, /*preallocate=*/true));
      runs[threads].push_back(LoadRuns(md, files, targets[threads].back(), threads));
    }
  }
  // Whether every target of `threads` holds its columns (then zeroed for the next reader).
  auto check = [&](int threads, const std::string& who) {
    for (int r = 0; r < kRanks; ++r) {
      for (int i = 0; i < tensors; ++i) {
        dcpp::LocalChunk& c = targets[threads][r].FindTensor(Name(i))->chunks.at(0);
        if (!at::equal(c.tensor, full[i].narrow(1, c.box.offsets[1], c.box.sizes[1]))) {
          throw std::runtime_error(who + " gave rank " + std::to_string(r) + " wrong data for " + Name(i));
        }
        c.tensor.zero_();
      }
    }
  };
  auto keep_best = [](std::map<int, double>& m, int k, double t) {
    m[k] = m.count(k) ? std::min(m[k], t) : t;
  };
  for (int rep = 0; rep < reps; ++rep) {
    for (int threads : kThreadCounts) {
      const auto groups = Balance(file_bytes, threads);
      drop_cache();
      const double raw_c0 = CpuSeconds();
      const double t_raw = Time([&] {
        std::vector<std::function<void()>> jobs;
        for (const auto& g : groups) {
          jobs.push_back([&, g] {
            for (size_t f : g) {
              const int fd = ::open(files[f].c_str(), O_RDONLY | O_CLOEXEC);
              if (fd < 0) Fail("open " + files[f]);
              ReadAll(fd, buffer.data_ptr<uint8_t>() + file_offset[f], static_cast<size_t>(file_bytes[f]));
              ::close(fd);
            }
          });
        }
        RunParallel(jobs);
      });
      keep_best(raw, threads, t_raw);
      raw_all[threads].push_back(t_raw);
      raw_cpu[threads].push_back(CpuSeconds() - raw_c0);
      // The same runs as the 4 loads, one pread each, with the files opened once per rep.
      drop_cache();
      const double runs_c0 = CpuSeconds();
      const double t_runs = Time([&] {
        std::vector<int> fds;
        for (const std::string& f : files) {
          fds.push_back(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
          if (fds.back() < 0) Fail("open " + f);
        }
        for (const auto& lists : runs[threads]) {
          std::vector<std::function<void()>> jobs;
          for (const std::vector<Run>& list : lists) {
            jobs.push_back([&] {
              for (const Run& run : list) PreadAll(fds[run.file], run.dst, run.length, run.offset);
            });
          }
          RunParallel(jobs);
        }
        for (int fd : fds) ::close(fd);
      });
      if (rep == 0) check(threads, "the raw runs");
      keep_best(raw_runs, threads, t_runs);
      runs_all[threads].push_back(t_runs);
      runs_cpu[threads].push_back(CpuSeconds() - runs_c0);
      dcpp::LoadOptions lo;
      lo.thread_count = threads;
      for (const std::string& mode : modes) {
        if (mode.empty()) {
          ::unsetenv("DCPP_READ_BATCH");
        } else {
          ::setenv("DCPP_READ_BATCH", mode.c_str(), 1);
        }
        drop_cache();
        const double c0 = CpuSeconds();
        const double t = Time([&] {
          for (int r = 0; r < kRanks; ++r) dcpp::load(targets[threads][r], ckpt, lo);
        });
        if (mode.empty()) keep_best(dc, threads, t);
        if (rep == 0) check(threads, "dcpp::load (DCPP_READ_BATCH=" + (mode.empty() ? "default" : mode) + ")");
        mode_all[mode][threads].push_back(t);
        mode_cpu[mode][threads].push_back(CpuSeconds() - c0);
      }
      ::unsetenv("DCPP_READ_BATCH");
    }
  }
  for (int threads : kThreadCounts) {
    std::printf("threads=%d  raw read %.3f s %.2f GB/s   dcpp 4 loads %.3f s %.2f GB/s (of bytes needed)\n",
                threads, raw[threads], GBps(raw_bytes, raw[threads]), dc[threads], GBps(needed, dc[threads]));
  }
  // A/B of the batched-read modes: median [min, max] over the reps, in ms, and the median's
  // ratio to the median raw read of the same thread count.
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  };
  auto spread = [&](const std::vector<double>& v) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%7.1f [%6.1f, %6.1f] ms", 1e3 * median(v),
                  1e3 * *std::min_element(v.begin(), v.end()), 1e3 * *std::max_element(v.begin(), v.end()));
    return std::string(buf);
  };
  for (int threads : kThreadCounts) {
    const double raw_gbps = GBps(raw_bytes, median(raw_all[threads]));
    std::printf("threads=%d  %-25s %s  cpu %.1f ms\n", threads, "raw read", spread(raw_all[threads]).c_str(),
                1e3 * median(raw_cpu[threads]));
    std::printf("threads=%d  %-25s %s  vs raw %.3f  cpu %.1f ms\n", threads, "raw runs (pread each)",
                spread(runs_all[threads]).c_str(), GBps(needed, median(runs_all[threads])) / raw_gbps,
                1e3 * median(runs_cpu[threads]));
    for (const std::string& mode : modes) {
      const std::vector<double>& v = mode_all[mode][threads];
      std::printf("threads=%d  %-25s %s  vs raw %.3f  cpu %.1f ms\n", threads,
                  mode.empty() ? "default" : ("DCPP_READ_BATCH=" + mode).c_str(), spread(v).c_str(),
                  GBps(needed, median(v)) / raw_gbps, 1e3 * median(mode_cpu[mode][threads]));
    }
  }

  auto best = [](const std::map<int, double>& m) {
    double b = 1e300;
    for (const auto& kv : m) b = std::min(b, kv.second);
    return b;
  };
  const double raw_gbps = GBps(raw_bytes, best(raw));
  const double dcpp_gbps = GBps(needed, best(dc));
  const double runs_gbps = GBps(needed, best(raw_runs));
  std::printf("BENCH reshard_read_amplification %.4f ratio\n", static_cast<double>(read) / needed);
  std::printf("BASELINE raw read() of the same files %.2f GB/s; the same runs, one pread each, %.2f GB/s\n",
              raw_gbps, runs_gbps);
  std::printf("BENCH reshard_load_vs_raw %.3f ratio\n", dcpp_gbps / raw_gbps);
  std::printf("BENCH reshard_load_vs_raw_runs %.3f ratio\n", dcpp_gbps / runs_gbps);
  std::printf("BENCH reshard_runs_vs_raw %.3f ratio\n", runs_gbps / raw_gbps);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("reshard", Main, argc, argv); }
