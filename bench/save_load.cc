// save_load: dcpp save/load throughput of a ~2 GiB state dict on /dev/shm against
//   (a) plain sequential write()/read() of the same bytes (one file per thread), and
//   (b) PyTorch DCP (torch.distributed.checkpoint.save/load, single process, no process
//       group), run in a Python subprocess (bench/dcp_baseline.py) on the same shapes/dtypes,
// and the peak extra host memory of a load into non-contiguous targets (which must be staged).
//
//   bazel run -c opt //bench:save_load [-- --total_mib=2048 --reps=3 --skip_dcp]
//
// Every timing is the best of --reps runs (raw and dcpp runs interleaved); the figures are
// ratios against baselines measured in the same run, best against best over thread counts 1
// and 2 (DCP's FileSystemWriter: 1, 2 and 4). Targets:
//   save_vs_raw, load_vs_raw  >= 0.95  (dcpp throughput / raw write() or read() throughput;
//                                       dcpp hashes every byte, raw does not)
//   save_vs_raw_hashed, load_vs_raw_hashed  (the same over raw write() or read() that also
//                                       hashes every byte with dcpp's XXH3-64, block by block of
//                                       kHashedBlockBytes after each call, as the engine does:
//                                       the floor of any writer or reader with checksums)
//   raw_hashed_save_vs_raw, raw_hashed_load_vs_raw  (that floor over raw: the most a
//                                       checksummed save or load can show as save/load_vs_raw)
//   dcp_save_vs_raw_write             (DCP's best save time / raw write time: the most any
//                                       writer can show against DCP on this machine)
//   save_vs_dcp, load_vs_dcp  >= 3     (DCP time / dcpp time)
//   dcp_format_save_vs_native >= 0.9   (dcpp save time / dcpp save time with format=kDcp, at
//                                       thread_count 2, the median of the interleaved pairs)
//   dcp_format_save_vs_dcp    >= 2     (DCP's best save time / dcpp's best format=kDcp save)
//   load_peak_extra_mib       <= staging_budget_mib + 64   (budget = thread_count * staging_bytes)
//
// The Python interpreter is $DCPP_PYTHON, else python3 on the PATH.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/dcpp.h"
#include "core/engine/chunk_io.h"
#include "core/format/checksum.h"

namespace {

using namespace dcpp_bench;

constexpr int kThreadCounts[] = {1, 2};
// DCP at its best: FileSystemWriter thread_count 1, 2 and 4, the fastest kept (its
// FileSystemReader has no options in torch 2.11).
constexpr int kDcpThreadCounts[] = {1, 2, 4};

// A mix like a model's state dict, ~total_mib in all: per layer one 16 MiB tensor, one 4 MiB
// tensor and one small tensor (1 KiB .. 1 MiB, 1-D or 2-D), float32 and bfloat16 alternating.
// 2048 MiB gives 100 layers, 300 tensors, ~2014 MiB.
std::vector<Spec> MakeSpecs(int64_t total_mib) {
  const int64_t layers = std::max<int64_t>(1, total_mib * 100 / 2048);
  std::vector<Spec> specs;
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const bool f32 = i % 2 == 0;
    const c10::ScalarType big = f32 ? at::kFloat : at::kBFloat16;
    const c10::ScalarType other = f32 ? at::kBFloat16 : at::kFloat;
    specs.push_back({p + "mlp.weight", big, {f32 ? 2048 : 4096, 2048}});
    specs.push_back({p + "attn.weight", other, {f32 ? 2048 : 1024, 1024}});
    const int64_t numel = int64_t{256} << (i % 11);
    if (i % 3 == 0) {
      specs.push_back({p + "norm.bias", big, {numel}});
    } else {
      specs.push_back({p + "norm.weight", big, {numel / 64, 64}});
    }
  }
  return specs;
}

int64_t TotalBytes(const std::vector<Spec>& specs) {
  int64_t n = 0;
  for (const Spec& s : specs) n += s.nbytes();
  return n;
}

// Contiguous targets, touched so that their pages exist before anything is timed.
std::vector<at::Tensor> Preallocate(const std::vector<Spec>& specs) {
  std::vector<at::Tensor> out;
  for (const Spec& s : specs) out.push_back(at::zeros(s.shape, at::TensorOptions().dtype(s.dtype)));
  return out;
}

dcpp::StateDict MakeStateDict(const std::vector<Spec>& specs, const std::vector<at::Tensor>& ts) {
  dcpp::StateDict sd;
  for (size_t i = 0; i < specs.size(); ++i) sd.AddTensor(specs[i].name, ts[i]);
  return sd;
}


bool AllEqual(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (!at::equal(a[i], b[i])) return false;
  }
  return true;
}

// ---- peak memory of a load into non-contiguous targets (run in a fresh child process) ----

constexpr const char* kMemChildFlag = "--mem-child";

// argv: --mem-child DIR TOTAL_MIB THREADS STAGING_BYTES. Prints one line "MEMCHILD {json}".
int MemChild(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: save_load --mem-child DIR TOTAL_MIB THREADS STAGING_BYTES\n";
    return 2;
  }
  at::set_num_threads(1);  // as in the parent
  const std::string dir = argv[2];
  const std::vector<Spec> specs = MakeSpecs(std::stoll(argv[3]));
  dcpp::LoadOptions opt;
  opt.thread_count = std::stoi(argv[4]);
  opt.staging_bytes = std::stoll(argv[5]);

  // Targets: 2-D tensors as transposed views of [cols, rows] buffers (non-contiguous, so
  // every chunk goes through the staging buffers); 1-D tensors contiguous.
  std::vector<at::Tensor> targets;
  int64_t tensor_bytes = 0, staged_bytes = 0;
  for (const Spec& s : specs) {
    const auto o = at::TensorOptions().dtype(s.dtype);
    at::Tensor t = s.shape.size() == 2 ? at::zeros({s.shape[1], s.shape[0]}, o).t() : at::zeros(s.shape, o);
    tensor_bytes += s.nbytes();
    if (!t.is_contiguous()) staged_bytes += s.nbytes();
    targets.push_back(t);
  }
  dcpp::StateDict sd = MakeStateDict(specs, targets);

  const int64_t rss_before = StatusBytes("VmRSS");
  const bool reset = ResetPeakRss();
  const int64_t hwm_reset = StatusBytes("VmHWM");
  const double t0 = Now();
  const dcpp::LoadStats st = dcpp::load(sd, dir, opt);
  const double secs = Now() - t0;
  const int64_t hwm_after = StatusBytes("VmHWM");
  const int64_t rss_after = StatusBytes("VmRSS");

  // Check a sample of the loaded tensors against regenerated sources (after the measurement).
  bool ok = st.bytes_needed == tensor_bytes;
  for (size_t i = 0; i < specs.size() && ok; i += 7) ok = at::equal(targets[i], GoldenTensor(specs[i], i));

  nlohmann::json j;
  j["reset_ok"] = reset && hwm_reset <= rss_before + (16 << 20);
  j["rss_before"] = rss_before;
  j["hwm_after_reset"] = hwm_reset;
  j["hwm_after"] = hwm_after;
  j["rss_after"] = rss_after;
  j["tensor_bytes"] = tensor_bytes;
  j["staged_bytes"] = staged_bytes;
  j["seconds"] = secs;
  j["correct"] = ok;
  std::cout << "MEMCHILD " << j.dump() << std::endl;
  return 0;
}

// The JSON a child prints after `tag` on its last such line.
nlohmann::json RunAndParse(const std::string& cmd, const std::string& tag) {
  return nlohmann::json::parse(RunTagged(cmd, tag));
}

int Main(int argc, char** argv) {
  std::string script = "bench/dcp_baseline.py";
  int64_t total_mib = 2048;
  int reps = 3;
  bool skip_dcp = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--total_mib=", 0) == 0) {
      total_mib = std::stoll(a.substr(12));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::stoi(a.substr(7));
    } else if (a == "--skip_dcp") {
      skip_dcp = true;
    } else if (a.rfind("--", 0) != 0) {
      script = a;
    } else {
      std::cerr << "usage: save_load [DCP_SCRIPT] [--total_mib=N] [--reps=N] [--skip_dcp]\n";
      return 2;
    }
  }
  at::set_num_threads(1);  // the benchmark's parallelism is the engine's thread_count

  ScratchDir scratch("save_load");
  const std::vector<Spec> specs = MakeSpecs(total_mib);
  const int64_t bytes = TotalBytes(specs);
  std::cout << "save_load: " << specs.size() << " tensors, " << MiB(bytes) << " MiB, in "
            << scratch.path() << ", best of " << reps << "\n";

  double t0 = Now();
  std::vector<at::Tensor> src;
  for (size_t i = 0; i < specs.size(); ++i) src.push_back(GoldenTensor(specs[i], i));
  std::vector<at::Tensor> dst = Preallocate(specs);
  std::cout << "generated sources and targets in " << Now() - t0 << " s\n";
  const dcpp::StateDict src_sd = MakeStateDict(specs, src);
  dcpp::StateDict dst_sd = MakeStateDict(specs, dst);
  auto zero_dst = [&] {
    for (at::Tensor& t : dst) t.zero_();
  };

  // Raw baseline and dcpp, interleaved rep by rep so that background load on a shared machine
  // hits both alike. Every write goes into an empty folder; every read or load goes into the
  // preallocated targets (zeroed and checked against the sources on the first rep).
  std::map<int, double> raw_w, raw_r, raw_hw, raw_hr, dcpp_w, dcpp_r, dcpfmt_w;
  // The hashed baselines: one streaming XXH3-64 per tensor, fed block by block, checked against
  // the sources' checksums so that the hashing cannot be optimized away or go wrong.
  std::vector<uint64_t> src_sums;
  for (const at::Tensor& t : src) src_sums.push_back(dcpp::Checksum::Of(t.const_data_ptr(), t.nbytes()));
  std::vector<std::unique_ptr<dcpp::Checksum>> sums(src.size());
  auto hashed = [&](auto&& raw_io) {
    for (auto& c : sums) c = std::make_unique<dcpp::Checksum>();
    const double t = Time([&] {
      raw_io([&](size_t i, const void* p, size_t n) { sums[i]->Update(p, n); }, dcpp::kHashedBlockBytes);
    });
    for (size_t i = 0; i < src.size(); ++i) {
      if (sums[i]->Digest() != src_sums[i]) throw std::runtime_error("a hashed baseline got another checksum");
    }
    return t;
  };
  std::vector<double> pair_native, pair_dcpfmt;  // thread_count 2's native and format=kDcp saves, rep by rep
  std::map<int, dcpp::SaveStats> save_stats;
  std::map<int, dcpp::LoadStats> load_stats;
  const std::string raw_dir = scratch.Sub("raw");
  const std::string raw_hashed_dir = scratch.Sub("raw_hashed");
  const std::string ckpt = scratch.Sub("dcpp");
  const std::string dcpfmt = scratch.Sub("dcpp_dcp_format");
  auto keep_best = [](std::map<int, double>& m, int k, double t) {
    m[k] = m.count(k) ? std::min(m[k], t) : t;
  };
  for (int rep = 0; rep < reps; ++rep) {
    for (int threads : kThreadCounts) {
      dcpp::SaveOptions so;
      so.thread_count = threads;
      dcpp::LoadOptions lo;
      lo.thread_count = threads;
      // Every file is read once per rep, each the first read since its write: a first read of
      // freshly written tmpfs pages costs more than a second one (~10% measured here), so a
      // baseline that read the same files twice would have it easier than dcpp's load. At most
      // three 2 GiB folders exist at once (as before the hashed baselines came), and each timed
      // write comes right after the folder it replaces was removed. This VM hands free memory
      // back to its host (free page reporting, 8 MiB blocks, after ~2 s), and a write into
      // memory handed back ran 2-4x slower; memory freed just before is still the guest's.
      ResetDir(raw_dir);
      keep_best(raw_w, threads, Time([&] { RawWrite(raw_dir, src, threads); }));
      std::filesystem::remove_all(ckpt);
      const double native_s = Time([&] { save_stats[threads] = dcpp::save(src_sd, ckpt, so); });
      keep_best(dcpp_w, threads, native_s);
      // The same tensors in PyTorch DCP's format (each chunk a torch.save archive with its CRC-32).
      std::filesystem::remove_all(dcpfmt);
      dcpp::SaveOptions dso = so;
      dso.format = dcpp::Format::kDcp;
      dcpp::SaveStats dst_stats;
      const double dcpfmt_s = Time([&] { dst_stats = dcpp::save(src_sd, dcpfmt, dso); });
      keep_best(dcpfmt_w, threads, dcpfmt_s);
      if (dst_stats.bytes_written != bytes) throw std::runtime_error("format=kDcp save wrote an unexpected byte count");
      if (threads == 2) {
        pair_native.push_back(native_s);
        pair_dcpfmt.push_back(dcpfmt_s);
      }
      if (rep == 0) {
        // The DCP-format folder loads back (values compared; torch's dcp.load of such folders
        // is the interop tests' business).
        zero_dst();
        const dcpp::LoadStats fs = dcpp::load(dst_sd, dcpfmt, lo);
        if (!AllEqual(src, dst) || fs.bytes_needed != bytes) throw std::runtime_error("format=kDcp save loads back wrong");
      }
      std::filesystem::remove_all(dcpfmt);
      ResetDir(raw_hashed_dir);
      keep_best(raw_hw, threads,
                hashed([&](const BlockFn& f, size_t b) { RawWrite(raw_hashed_dir, src, threads, f, b); }));
      if (rep == 0) zero_dst();
      keep_best(raw_r, threads, Time([&] { RawRead(raw_dir, dst, threads); }));
      if (rep == 0 && !AllEqual(src, dst)) throw std::runtime_error("raw read-back differs from the source");
      keep_best(raw_hr, threads,
                hashed([&](const BlockFn& f, size_t b) { RawRead(raw_hashed_dir, dst, threads, f, b); }));
      ResetDir(raw_hashed_dir);
      if (rep == 0) zero_dst();
      keep_best(dcpp_r, threads, Time([&] { load_stats[threads] = dcpp::load(dst_sd, ckpt, lo); }));
      if (rep == 0 && !AllEqual(src, dst)) throw std::runtime_error("dcpp load differs from the source");
      const dcpp::LoadStats& ls = load_stats[threads];
      if (save_stats[threads].bytes_written != bytes || ls.bytes_read != bytes || ls.bytes_needed != bytes) {
        throw std::runtime_error("dcpp wrote or read an unexpected byte count");
      }
    }
  }
  std::filesystem::remove_all(raw_dir);
  std::filesystem::remove_all(raw_hashed_dir);
  for (int threads : kThreadCounts) {
    std::printf("raw  threads=%d  write %6.3f s %6.2f GB/s   read %6.3f s %6.2f GB/s\n", threads,
                raw_w[threads], GBps(bytes, raw_w[threads]), raw_r[threads], GBps(bytes, raw_r[threads]));
    std::printf("raw+XXH3 threads=%d  write %6.3f s %6.2f GB/s   read %6.3f s %6.2f GB/s\n", threads,
                raw_hw[threads], GBps(bytes, raw_hw[threads]), raw_hr[threads], GBps(bytes, raw_hr[threads]));
    std::printf("dcpp threads=%d  save  %6.3f s %6.2f GB/s   load %6.3f s %6.2f GB/s  (%lld files, %lld reads)\n",
                threads, dcpp_w[threads], GBps(bytes, dcpp_w[threads]), dcpp_r[threads],
                GBps(bytes, dcpp_r[threads]), static_cast<long long>(save_stats[threads].files),
                static_cast<long long>(load_stats[threads].read_calls));
    std::printf("dcpp threads=%d  save format=kDcp %6.3f s %6.2f GB/s\n", threads, dcpfmt_w[threads],
                GBps(bytes, dcpfmt_w[threads]));
  }
  std::vector<double> pair_ratio;
  for (size_t i = 0; i < pair_native.size(); ++i) pair_ratio.push_back(pair_native[i] / pair_dcpfmt[i]);
  std::sort(pair_ratio.begin(), pair_ratio.end());
  const double fmt_ratio = pair_ratio[pair_ratio.size() / 2];
  std::printf("threads=2 native/format=kDcp save, rep by rep:");
  for (size_t i = 0; i < pair_native.size(); ++i) std::printf(" %.3f/%.3f", pair_native[i], pair_dcpfmt[i]);
  std::printf("  (ratio median %.3f, min %.3f, max %.3f)\n", fmt_ratio, pair_ratio.front(), pair_ratio.back());

  // Diagnostics (not figures): what the checksums cost. (With verify_checksums false the chunk
  // reader skips the hash. These loads run back to back, not interleaved with the raw runs and
  // saves as the timed ones are, so they start warmer: the difference overstates the hash.)
  {
    dcpp::LoadOptions lo;
    lo.thread_count = kThreadCounts[std::size(kThreadCounts) - 1];
    lo.verify_checksums = false;
    const double t = BestOf(reps, nullptr, [&] { dcpp::load(dst_sd, ckpt, lo); });
    uint64_t sink = 0;
    const double h = BestOf(reps, nullptr, [&] {
      for (const at::Tensor& x : src) sink += XXH3_64bits(x.const_data_ptr(), x.nbytes());
    });
    std::printf("info: dcpp load threads=%d verify_checksums=false %6.3f s %6.2f GB/s; "
                "XXH3-64 of all bytes on one thread %6.3f s %6.2f GB/s (%llx)\n",
                lo.thread_count, t, GBps(bytes, t), h, GBps(bytes, h), static_cast<unsigned long long>(sink & 0xff));
  }

  // Peak memory of a load into transposed views, in a fresh process (the last checkpoint has
  // as many files as the largest thread count): with the default staging_bytes (the figure),
  // then with staging smaller than the largest chunks (information).
  const int mem_threads = kThreadCounts[std::size(kThreadCounts) - 1];
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  auto measure = [&](int64_t staging, int64_t* extra, int64_t* budget) {
    const nlohmann::json mem =
        RunAndParse(Quote(self) + " " + kMemChildFlag + " " + Quote(ckpt) + " " + std::to_string(total_mib) +
                        " " + std::to_string(mem_threads) + " " + std::to_string(staging),
                    "MEMCHILD ");
    if (!mem["correct"].get<bool>()) throw std::runtime_error("non-contiguous load gave wrong data");
    if (!mem["reset_ok"].get<bool>()) std::cout << "warning: could not reset VmHWM; the peak is an upper bound\n";
    *extra = mem["hwm_after"].get<int64_t>() - mem["rss_before"].get<int64_t>();
    *budget = mem_threads * staging;
    std::printf("non-contiguous load (threads=%d, staging %.0f MiB, %.0f of %.0f MiB staged) %.3f s: RSS before "
                "%.0f MiB, peak %.0f MiB, extra %.1f MiB, budget %.0f MiB\n",
                mem_threads, MiB(staging), MiB(mem["staged_bytes"].get<int64_t>()),
                MiB(mem["tensor_bytes"].get<int64_t>()), mem["seconds"].get<double>(),
                MiB(mem["rss_before"].get<int64_t>()), MiB(mem["hwm_after"].get<int64_t>()), MiB(*extra),
                MiB(*budget));
  };
  int64_t extra = 0, budget = 0, small_extra = 0, small_budget = 0;
  measure(dcpp::LoadOptions().staging_bytes, &extra, &budget);
  measure(4 << 20, &small_extra, &small_budget);
  std::filesystem::remove_all(ckpt);

  // PyTorch DCP in a subprocess.
  double dcp_w = 0, dcp_r = 0;
  if (!skip_dcp) {
    const std::string spec_path = scratch.Sub("spec.json");
    WriteSpecJson(spec_path, specs);
    std::ostringstream threads_arg;
    for (size_t i = 0; i < std::size(kDcpThreadCounts); ++i) threads_arg << (i ? "," : "") << kDcpThreadCounts[i];
    const std::string cmd = PythonCommand(script) +
                            " " + Quote(spec_path) + " " + Quote(scratch.Sub("dcp")) + " " +
                            std::to_string(reps) + " " + threads_arg.str();
    const nlohmann::json r = RunAndParse(cmd, "DCP_RESULT ");
    if (r["bytes"].get<int64_t>() != bytes) throw std::runtime_error("the DCP script built other tensors");
    dcp_w = 1e300;
    for (auto& [k, v] : r["save"].items()) {
      dcp_w = std::min(dcp_w, v.get<double>());
      std::printf("dcp  threads=%s  save  %6.3f s %6.2f GB/s\n", k.c_str(), v.get<double>(),
                  GBps(bytes, v.get<double>()));
    }
    std::printf("dcp best save: %.3f s over FileSystemWriter thread_count %s\n", dcp_w, threads_arg.str().c_str());
    dcp_r = r["load"].get<double>();
    std::printf("dcp             load  %6.3f s %6.2f GB/s (FileSystemReader is single-threaded)\n", dcp_r,
                GBps(bytes, dcp_r));
  }

  // Best against best over the thread counts tried.
  auto best = [](const std::map<int, double>& m) {
    double b = 1e300;
    for (const auto& kv : m) b = std::min(b, kv.second);
    return b;
  };
  std::printf("best: raw write %.3f s, raw read %.3f s, dcpp save %.3f s, dcpp load %.3f s\n", best(raw_w),
              best(raw_r), best(dcpp_w), best(dcpp_r));
  std::printf("BASELINE raw write() %.2f GB/s, raw read() %.2f GB/s (best thread count); with XXH3-64 of every "
              "block %.2f GB/s, %.2f GB/s", GBps(bytes, best(raw_w)), GBps(bytes, best(raw_r)),
              GBps(bytes, best(raw_hw)), GBps(bytes, best(raw_hr)));
  if (dcp_w > 0) std::printf("; PyTorch dcp.save %.2f GB/s, dcp.load %.2f GB/s", GBps(bytes, dcp_w), GBps(bytes, dcp_r));
  std::printf("\n");
  std::printf("BENCH save_vs_raw %.3f ratio\n", best(raw_w) / best(dcpp_w));
  std::printf("BENCH load_vs_raw %.3f ratio\n", best(raw_r) / best(dcpp_r));
  std::printf("BENCH save_vs_raw_hashed %.3f ratio\n", best(raw_hw) / best(dcpp_w));
  std::printf("BENCH load_vs_raw_hashed %.3f ratio\n", best(raw_hr) / best(dcpp_r));
  std::printf("BENCH raw_hashed_save_vs_raw %.3f ratio\n", best(raw_w) / best(raw_hw));
  std::printf("BENCH raw_hashed_load_vs_raw %.3f ratio\n", best(raw_r) / best(raw_hr));
  std::printf("BENCH dcp_format_save_vs_native %.3f ratio\n", fmt_ratio);
  if (!skip_dcp) {
    std::printf("BENCH dcp_format_save_vs_dcp %.3f ratio\n", dcp_w / best(dcpfmt_w));
    std::printf("BENCH dcp_save_vs_raw_write %.3f ratio\n", dcp_w / best(raw_w));
    std::printf("BENCH save_vs_dcp %.3f ratio\n", dcp_w / best(dcpp_w));
    std::printf("BENCH load_vs_dcp %.3f ratio\n", dcp_r / best(dcpp_r));
  }
  std::printf("BENCH load_peak_extra_mib %.1f MiB\n", MiB(extra));
  std::printf("BENCH staging_budget_mib %.1f MiB\n", MiB(budget));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && std::string(argv[1]) == kMemChildFlag) return MemChild(argc, argv);
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "save_load failed: " << e.what() << "\n";
    return 1;
  }
}
