// gpu_save_load: dcpp on CUDA tensors (~8 GiB, a model-like mix) saved to and loaded from
// /dev/shm, against baselines measured in the same run:
//   (a) pinned copies of the same bytes: every CUDA tensor copied to (D2H) and from (H2D) a
//       pinned host tensor of its own (at::Tensor::copy_, non_blocking, one device sync);
//   (b) PyTorch DCP (torch.distributed.checkpoint.save/load, single process, no process
//       group) on CUDA tensors of the same shapes and dtypes, in a Python child
//       (bench/gpu_dcp_baseline.py) that runs, and exits, before this process allocates;
// and dcpp::AsyncSaver::Save's blocking time (until Save() returns) against (a)'s D2H time.
//
//   bazel run -c opt --config=cuda //bench:gpu_save_load [-- --gib=8 --reps=3 ...]
//   gpu_bundle/run.sh (scripts/gpu_bundle.sh), on a GPU machine without Bazel
//
// Without a GPU (at::hasCUDA() false, always so in the CPU build, which does not link
// libtorch_cuda) it prints one line saying so and exits 0 without BENCH lines.
//
// Targets: gpu_save_vs_d2h, gpu_load_vs_h2d >= 0.8 (throughput / pinned copy throughput);
// gpu_save_vs_dcp, gpu_load_vs_dcp >= 3 (DCP time / dcpp time); async_block_vs_d2h <= 1.2.
// dcpp figures are the best over the --configs (thread_count x staging_bytes); every timing
// is the best of --reps and ends with a device synchronisation.
//
// Options: --gib=X (default 8, or $DCPP_GPU_BENCH_GIB; scaled down, with a message, when
// /dev/shm or memory is short), --reps=N (3), --configs=TxM,... (threads x staging MiB,
// default 1x64,2x64,2x256,4x256), --staging_buffers=N (4), --skip_dcp, --device=cpu (a dry
// run of the whole flow on CPU tensors, to test the benchmark on a machine without a GPU; it
// prints "dry-run" lines instead of BENCH lines). A first non-flag argument is the Python
// script (default bench/gpu_dcp_baseline.py, as FindScript finds it, else beside this binary).
// The interpreter is $DCPP_PYTHON, else python3.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/CachingHostAllocator.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <nlohmann/json.hpp>
#include <sys/statvfs.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/dcpp.h"
#include "core/engine/async_save.h"

namespace {

using namespace dcpp_bench;

struct Config {
  int threads;
  int64_t staging_mib;
  std::string Name() const { return std::to_string(threads) + "x" + std::to_string(staging_mib) + "MiB"; }
};

struct Options {
  std::string script = "bench/gpu_dcp_baseline.py";
  double gib = 8;
  int reps = 3;
  std::vector<Config> configs = {{1, 64}, {2, 64}, {2, 256}, {4, 256}};
  int staging_buffers = 4;
  bool skip_dcp = false;
  bool cpu = false;  // --device=cpu: dry run
};

// A model-like mix of about `gib` GiB, float32 and bfloat16: four large matrices of 1/16 of the
// total each (embeddings and output head in bf16, two fp32 optimizer moments), then layers of
// 16 w^2 bytes (attention wq/wk/wv/wo bf16 [w, w], feed_forward.w1 bf16 [2w, w], w2 fp32
// [w, w]) making up the other 3/4, each layer with five small tensors (32 B .. w * 256 B).
// 8 GiB: w = 4096, 24 layers, 269 tensors.
std::vector<Spec> MakeSpecs(double gib) {
  const int64_t total = static_cast<int64_t>(gib * (int64_t{1} << 30));
  const int64_t w = gib >= 2 ? 4096 : gib >= 0.5 ? 2048 : 1024;
  const auto bf16 = c10::ScalarType::BFloat16;
  const auto f32 = c10::ScalarType::Float;
  auto rows = [&](c10::ScalarType dt) {
    return std::max<int64_t>(64, total / 16 / (w * static_cast<int64_t>(c10::elementSize(dt))) / 64 * 64);
  };
  std::vector<Spec> specs = {
      {"tok_embeddings.weight", bf16, {rows(bf16), w}},
      {"output.weight", bf16, {rows(bf16), w}},
      {"optim.tok_embeddings.weight.exp_avg", f32, {rows(f32), w}},
      {"optim.tok_embeddings.weight.exp_avg_sq", f32, {rows(f32), w}},
  };
  const int64_t layers = std::max<int64_t>(1, std::llround(0.75 * static_cast<double>(total) / (16.0 * w * w)));
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    for (const char* m : {"wq", "wk", "wv", "wo"}) specs.push_back({p + "attention." + m + ".weight", bf16, {w, w}});
    specs.push_back({p + "feed_forward.w1.weight", bf16, {2 * w, w}});
    specs.push_back({p + "feed_forward.w2.weight", f32, {w, w}});
    specs.push_back({p + "attention_norm.weight", f32, {w}});
    specs.push_back({p + "ffn_norm.weight", f32, {w}});
    specs.push_back({p + "attention.wo.bias", bf16, {w}});
    specs.push_back({p + "feed_forward.router.weight", f32, {64, w}});
    specs.push_back({p + "feed_forward.scale", f32, {8}});
  }
  specs.push_back({"norm.weight", f32, {w}});
  return specs;
}

int64_t TotalBytes(const std::vector<Spec>& specs) {
  int64_t n = 0;
  for (const Spec& s : specs) n += s.nbytes();
  return n;
}

double GiB(int64_t bytes) { return static_cast<double>(bytes) / (int64_t{1} << 30); }

// Waits for all work on the device (a no-op on the CPU).
void Sync(const c10::Device& d) {
  if (d.is_cuda()) c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).synchronizeDevice(d.index());
}

int64_t FreeBytes(const std::string& dir) {
  struct statvfs s {};
  if (::statvfs(dir.c_str(), &s) != 0) Fail("statvfs " + dir);
  return static_cast<int64_t>(s.f_bavail) * static_cast<int64_t>(s.f_frsize);
}

// MemAvailable from /proc/meminfo, in bytes; -1 if absent.
int64_t MemAvailable() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return -1;
}

// Bytes pinned and cudaHostAlloc calls so far by the CUDA host (pinned) allocator.
struct PinnedStats {
  int64_t allocated = 0, allocs = 0;
  double alloc_s = 0;
};
PinnedStats Pinned(const c10::Device& d) {
  PinnedStats p;
  if (!d.is_cuda()) return p;
  try {
    const at::HostStats s = at::getHostAllocator(at::kCUDA)->get_stats();
    p.allocated = s.allocated_bytes.current;
    p.allocs = s.num_host_alloc;
    p.alloc_s = static_cast<double>(s.host_alloc_time.total) * 1e-6;  // microseconds
  } catch (const std::exception&) {  // information only
  }
  return p;
}

dcpp::StateDict MakeStateDict(const std::vector<Spec>& specs, const std::vector<at::Tensor>& ts) {
  dcpp::StateDict sd;
  for (size_t i = 0; i < specs.size(); ++i) sd.AddTensor(specs[i].name, ts[i]);
  return sd;
}

void CheckEqual(const std::vector<Spec>& specs, const std::vector<at::Tensor>& got,
                const std::vector<at::Tensor>& want, const std::string& what) {
  for (size_t i = 0; i < specs.size(); ++i) {
    if (got[i].device() != want[i].device() || !at::equal(got[i], want[i])) {
      throw std::runtime_error(what + ": '" + specs[i].name + "' differs from the source");
    }
  }
}


// The baseline script: as FindScript finds it (runfiles under `bazel run`, the workspace),
// else a file of that name beside this binary (gpu_bundle/bench/).
std::string ResolveScript(const std::string& arg) {
  try {
    return FindScript(arg);
  } catch (const std::exception&) {
  }
  const std::filesystem::path beside =
      std::filesystem::read_symlink("/proc/self/exe").parent_path() / std::filesystem::path(arg).filename();
  if (std::filesystem::exists(beside)) return beside.string();
  throw std::runtime_error("cannot find the Python script '" + arg + "' (nor beside this binary)");
}

bool ParseConfigs(const std::string& text, std::vector<Config>* out) {
  out->clear();
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t x = item.find('x');
    if (x == std::string::npos) return false;
    try {
      const Config c{std::stoi(item.substr(0, x)), std::stoll(item.substr(x + 1))};
      if (c.threads < 1 || c.staging_mib < 1) return false;
      out->push_back(c);
    } catch (const std::exception&) {
      return false;
    }
  }
  return !out->empty();
}

int Usage() {
  std::cerr << "usage: gpu_save_load [DCP_SCRIPT] [--gib=X] [--reps=N] [--configs=TxM,...] "
               "[--staging_buffers=N] [--skip_dcp] [--device=cpu]\n";
  return 2;
}

int Main(int argc, char** argv) {
  Options o;
  if (const char* g = std::getenv("DCPP_GPU_BENCH_GIB"); g != nullptr && *g) o.gib = std::stod(g);
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&](const char* flag) { return a.substr(std::strlen(flag)); };
    if (a.rfind("--gib=", 0) == 0) {
      o.gib = std::stod(val("--gib="));
    } else if (a.rfind("--reps=", 0) == 0) {
      o.reps = std::max(1, std::stoi(val("--reps=")));
    } else if (a.rfind("--configs=", 0) == 0) {
      if (!ParseConfigs(val("--configs="), &o.configs)) return Usage();
    } else if (a.rfind("--staging_buffers=", 0) == 0) {
      o.staging_buffers = std::max(1, std::stoi(val("--staging_buffers=")));
    } else if (a == "--skip_dcp") {
      o.skip_dcp = true;
    } else if (a == "--device=cpu") {
      o.cpu = true;
    } else if (a == "--device=cuda") {
      o.cpu = false;
    } else if (a.rfind("--", 0) != 0) {
      o.script = a;
    } else {
      return Usage();
    }
  }
  if (!(o.gib > 0)) return Usage();

  if (!o.cpu && !at::hasCUDA()) {
#ifdef DCPP_WITH_CUDA
    std::printf("gpu_save_load: no GPU visible (at::hasCUDA() is false); nothing measured\n");
#else
    std::printf("gpu_save_load: no GPU: this is the CPU build (without libtorch_cuda at::hasCUDA() is "
                "false); on a GPU machine use --config=cuda or scripts/gpu_bundle.sh; nothing measured\n");
#endif
    return 0;
  }
  const c10::Device dev = o.cpu ? c10::Device(c10::kCPU) : c10::Device(c10::kCUDA, 0);
  const char* bench = o.cpu ? "dry-run" : "BENCH";

  // Room: one checkpoint on /dev/shm at a time, plus as much pinned host memory as the tensors
  // (the copies' host tensors, or AsyncSaver's snapshot; pinned blocks are cached and reused).
  ScratchDir scratch("gpu_save_load");
  std::vector<Spec> specs = MakeSpecs(o.gib);
  {
    const int64_t want = TotalBytes(specs);
    const int64_t shm = FreeBytes(scratch.path());
    const int64_t mem = MemAvailable();
    double fit = (static_cast<double>(shm) - (256 << 20)) / (1.05 * static_cast<double>(want));
    if (mem > 0) fit = std::min(fit, (static_cast<double>(mem) - (int64_t{1} << 30)) / (2.25 * static_cast<double>(want)));
    if (fit < 1) {
      const double gib = o.gib * fit * 0.95;
      std::printf("gpu_save_load: %.2f GiB does not fit (%s has %.1f GiB free, MemAvailable %.1f GiB; "
                  "needs ~1.05x on the former, ~2.25x + 1 GiB of the latter): scaling down to %.2f GiB\n",
                  o.gib, scratch.path().c_str(), GiB(shm), GiB(mem), gib);
      if (gib < 1.0 / 16) throw std::runtime_error("not enough room for even 1/16 GiB");
      o.gib = gib;
      specs = MakeSpecs(o.gib);
    }
  }
  const int64_t bytes = TotalBytes(specs);
  int max_threads = 1;
  std::set<int> thread_set;
  for (const Config& c : o.configs) {
    max_threads = std::max(max_threads, c.threads);
    thread_set.insert(c.threads);
  }
  std::printf("gpu_save_load: %zu tensors, %.0f MiB (%.2f GiB) on %s%s, in %s, best of %d; %u hardware threads\n",
              specs.size(), MiB(bytes), GiB(bytes), dev.str().c_str(),
              o.cpu ? " (dry run: figures say nothing about GPUs)" : "", scratch.path().c_str(), o.reps,
              std::thread::hardware_concurrency());
  if (!o.cpu) std::printf("CUDA devices visible: %d\n", static_cast<int>(at::getNumGPUs()));
  std::fflush(stdout);

  // ---- PyTorch DCP first, in a child that exits before this process allocates ----
  bool have_dcp = false;
  double dcp_save = 0, dcp_load = 0;
  if (!o.skip_dcp) {
    try {
      const std::string spec_path = scratch.Sub("spec.json");
      WriteSpecJson(spec_path, specs);
      std::string threads_arg;
      for (int t : thread_set) threads_arg += (threads_arg.empty() ? "" : ",") + std::to_string(t);
      const std::string cmd = PythonCommand(ResolveScript(o.script)) + (o.cpu ? " --device cpu " : " ") +
                              Quote(spec_path) + " " + Quote(scratch.Sub("dcp")) + " " +
                              std::to_string(o.reps) + " " + threads_arg;
      const nlohmann::json r = nlohmann::json::parse(RunTagged(cmd, "GPU_DCP_RESULT "));
      if (r["bytes"].get<int64_t>() != bytes) throw std::runtime_error("the DCP script built other tensors");
      dcp_save = 1e300;
      for (auto& [k, v] : r["save"].items()) dcp_save = std::min(dcp_save, v.get<double>());
      dcp_load = r["load"].get<double>();
      have_dcp = true;
    } catch (const std::exception& e) {
      std::printf("warning: the PyTorch DCP baseline failed (%s); no gpu_*_vs_dcp figures\n", e.what());
    }
    std::filesystem::remove_all(scratch.Sub("dcp"));
  }

  // ---- the tensors ----
  double t0 = Now();
  std::vector<at::Tensor> src, dst;
  for (const Spec& s : specs) {
    src.push_back(at::rand(s.shape, at::TensorOptions().device(dev)).to(s.dtype));
    dst.push_back(at::zeros(s.shape, at::TensorOptions().device(dev).dtype(s.dtype)));
  }
  Sync(dev);
  std::printf("made sources and targets on %s in %.2f s\n", dev.str().c_str(), Now() - t0);
  const dcpp::StateDict src_sd = MakeStateDict(specs, src);
  dcpp::StateDict dst_sd = MakeStateDict(specs, dst);
  auto zero_dst = [&] {
    for (at::Tensor& t : dst) t.zero_();
    Sync(dev);
  };
  auto options_of = [&](const Config& c, auto opt) {
    opt.thread_count = c.threads;
    opt.staging_bytes = c.staging_mib << 20;
    opt.staging_buffers = o.staging_buffers;
    return opt;
  };

  // ---- AsyncSaver: the first call (pinned allocation) before anything else pins memory ----
  double async_first = 0, async_block = 1e300, async_total = 1e300;
  const Config& async_cfg = o.configs.back();
  {
    const std::string dir = scratch.Sub("async");
    const dcpp::SaveOptions so = options_of(async_cfg, dcpp::SaveOptions());
    const PinnedStats before = Pinned(dev);
    dcpp::AsyncSaver saver;
    for (int call = 0; call <= o.reps; ++call) {
      std::filesystem::remove_all(dir);
      Sync(dev);
      const double s0 = Now();
      const dcpp::PendingSave pending = saver.Save(src_sd, dir, so);
      const double block = Now() - s0;
      const dcpp::SaveStats st = pending.wait();
      const double total = Now() - s0;
      if (st.bytes_written != bytes) throw std::runtime_error("async save wrote an unexpected byte count");
      if (call == 0) {
        const PinnedStats after = Pinned(dev);
        async_first = block;
        std::printf("async save, first call:  Save() blocked %6.3f s, saved after %6.3f s (%lld pinned "
                    "allocations, %.0f MiB, %.3f s in them)\n",
                    block, total, static_cast<long long>(after.allocs - before.allocs),
                    MiB(after.allocated - before.allocated), after.alloc_s - before.alloc_s);
      } else {
        async_block = std::min(async_block, block);
        async_total = std::min(async_total, total);
      }
    }
    // What the last async checkpoint holds (untimed).
    zero_dst();
    dcpp::load(dst_sd, dir, options_of(async_cfg, dcpp::LoadOptions()));
    Sync(dev);
    CheckEqual(specs, dst, src, "load of the async checkpoint");
    std::filesystem::remove_all(dir);
  }  // the saver joins its thread: the snapshot's pinned blocks go back to the cache
  std::printf("async save, steady state (%s): Save() blocked %6.3f s (%6.2f GB/s), saved after %6.3f s; "
              "checkpoint checked\n",
              async_cfg.Name().c_str(), async_block, GBps(bytes, async_block), async_total);

  // ---- pinned copies of the same bytes, one host tensor per source ----
  std::vector<at::Tensor> host;
  for (const Spec& s : specs) {
    host.push_back(at::empty(s.shape, at::TensorOptions().dtype(s.dtype).pinned_memory(dev.is_cuda())));
  }
  const double d2h = BestOf(o.reps, [&] { Sync(dev); }, [&] {
    for (size_t i = 0; i < src.size(); ++i) host[i].copy_(src[i], /*non_blocking=*/true);
    Sync(dev);
  });
  const double h2d = BestOf(o.reps, zero_dst, [&] {
    for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(host[i], /*non_blocking=*/true);
    Sync(dev);
  });
  CheckEqual(specs, dst, src, "pinned D2H + H2D copies");
  size_t big = 0;
  for (size_t i = 0; i < specs.size(); ++i) big = specs[i].nbytes() > specs[big].nbytes() ? i : big;
  const double big_d2h = BestOf(o.reps, nullptr, [&] {
    host[big].copy_(src[big], true);
    Sync(dev);
  });
  const double big_h2d = BestOf(o.reps, nullptr, [&] {
    dst[big].copy_(host[big], true);
    Sync(dev);
  });
  std::printf("pinned copies, all %zu tensors: D2H %6.3f s %6.2f GB/s   H2D %6.3f s %6.2f GB/s\n", specs.size(),
              d2h, GBps(bytes, d2h), h2d, GBps(bytes, h2d));
  std::printf("pinned copies, largest tensor alone (%.0f MiB): D2H %6.2f GB/s   H2D %6.2f GB/s\n",
              MiB(specs[big].nbytes()), GBps(specs[big].nbytes(), big_d2h), GBps(specs[big].nbytes(), big_h2d));

  // ---- raw write()/read() of the host copies to /dev/shm: the storage side alone ----
  const std::string raw_dir = scratch.Sub("raw");
  const double raw_w = BestOf(o.reps, [&] { ResetDir(raw_dir); }, [&] { RawWrite(raw_dir, host, max_threads); });
  const double raw_r = BestOf(o.reps, nullptr, [&] { RawRead(raw_dir, host, max_threads); });
  std::filesystem::remove_all(raw_dir);
  std::printf("raw %s from/to pinned host, %d threads: write %6.3f s %6.2f GB/s   read %6.3f s %6.2f GB/s\n",
              scratch.path().c_str(), max_threads, raw_w, GBps(bytes, raw_w), raw_r, GBps(bytes, raw_r));
  host.clear();  // back to the pinned cache

  // ---- dcpp save and load into the preallocated targets, configs interleaved rep by rep ----
  const std::string ckpt = scratch.Sub("dcpp");
  std::vector<double> save_t(o.configs.size(), 1e300), load_t(o.configs.size(), 1e300);
  std::vector<dcpp::SaveStats> save_st(o.configs.size());
  std::vector<dcpp::LoadStats> load_st(o.configs.size());
  for (int rep = 0; rep < o.reps; ++rep) {
    for (size_t c = 0; c < o.configs.size(); ++c) {
      const dcpp::SaveOptions so = options_of(o.configs[c], dcpp::SaveOptions());
      const dcpp::LoadOptions lo = options_of(o.configs[c], dcpp::LoadOptions());
      std::filesystem::remove_all(ckpt);
      Sync(dev);
      save_t[c] = std::min(save_t[c], Time([&] {
                             save_st[c] = dcpp::save(src_sd, ckpt, so);
                             Sync(dev);
                           }));
      zero_dst();
      load_t[c] = std::min(load_t[c], Time([&] {
                             load_st[c] = dcpp::load(dst_sd, ckpt, lo);
                             Sync(dev);
                           }));
      if (rep == 0) CheckEqual(specs, dst, src, "dcpp load (" + o.configs[c].Name() + ")");
      if (save_st[c].bytes_written != bytes || load_st[c].bytes_needed != bytes) {
        throw std::runtime_error("dcpp wrote or loaded an unexpected byte count");
      }
    }
  }
  size_t best_save = 0, best_load = 0;
  for (size_t c = 0; c < o.configs.size(); ++c) {
    const dcpp::SaveStats& s = save_st[c];
    const dcpp::LoadStats& l = load_st[c];
    std::printf("dcpp %-10s save %6.3f s %6.2f GB/s (%lld files, staged %.0f MiB, staging peak %.0f MiB)   "
                "load %6.3f s %6.2f GB/s (staged %.0f MiB, staging peak %.0f MiB)\n",
                o.configs[c].Name().c_str(), save_t[c], GBps(bytes, save_t[c]), static_cast<long long>(s.files),
                MiB(s.staged_bytes), MiB(s.staging_peak_bytes), load_t[c], GBps(bytes, load_t[c]),
                MiB(l.staged_bytes), MiB(l.staging_peak_bytes));
    if (save_t[c] < save_t[best_save]) best_save = c;
    if (load_t[c] < load_t[best_load]) best_load = c;
  }

  // ---- dcpp load into unallocated targets (LoadOptions::allocate_device), best load config ----
  dst_sd = dcpp::StateDict();
  dst.clear();  // frees the targets; the device's caching allocator keeps their memory for the loads
  double alloc_t = 1e300;
  {
    const Config& cfg = o.configs[best_load];
    std::filesystem::remove_all(ckpt);
    dcpp::save(src_sd, ckpt, options_of(cfg, dcpp::SaveOptions()));
    dcpp::LoadOptions lo = options_of(cfg, dcpp::LoadOptions());
    lo.allocate_device = dev;
    for (int rep = 0; rep < o.reps; ++rep) {
      dcpp::StateDict u;
      for (const Spec& s : specs) u.AddUnallocated(s.name, s.dtype, s.shape, dcpp::Layout::Replicated(1), 0);
      Sync(dev);
      alloc_t = std::min(alloc_t, Time([&] {
                           dcpp::load(u, ckpt, lo);
                           Sync(dev);
                         }));
      if (rep == 0) {
        std::vector<at::Tensor> got;
        for (const Spec& s : specs) got.push_back(u.FindTensor(s.name)->chunks.at(0).tensor);
        CheckEqual(specs, got, src, "dcpp load into unallocated targets");
      }
    }
    std::filesystem::remove_all(ckpt);
    std::printf("dcpp %-10s load into unallocated targets (allocate_device %s) %6.3f s %6.2f GB/s\n",
                cfg.Name().c_str(), dev.str().c_str(), alloc_t, GBps(bytes, alloc_t));
  }
  std::printf("every dcpp load checked equal to the sources (at::equal, all %zu tensors)\n", specs.size());

  // ---- figures ----
  const double ds = save_t[best_save], dl = load_t[best_load];
  if (have_dcp) {
    std::printf("PyTorch DCP: save %6.3f s %6.2f GB/s   load %6.3f s %6.2f GB/s\n", dcp_save,
                GBps(bytes, dcp_save), dcp_load, GBps(bytes, dcp_load));
  }
  std::printf("best dcpp: save %.3f s (%s), load %.3f s (%s); bounds: save max(D2H, raw write) %.3f s, "
              "load max(H2D, raw read) %.3f s\n",
              ds, o.configs[best_save].Name().c_str(), dl, o.configs[best_load].Name().c_str(),
              std::max(d2h, raw_w), std::max(h2d, raw_r));
  std::printf("%s gpu_save_vs_d2h %.3f ratio\n", bench, d2h / ds);
  std::printf("%s gpu_load_vs_h2d %.3f ratio\n", bench, h2d / dl);
  if (have_dcp) {
    std::printf("%s gpu_save_vs_dcp %.3f speedup\n", bench, dcp_save / ds);
    std::printf("%s gpu_load_vs_dcp %.3f speedup\n", bench, dcp_load / dl);
  }
  std::printf("%s async_block_vs_d2h %.3f ratio\n", bench, async_block / d2h);
  std::printf("%s async_first_block_vs_d2h %.3f ratio\n", bench, async_first / d2h);
  std::printf("%s gpu_load_alloc_vs_h2d %.3f ratio\n", bench, h2d / alloc_t);
  std::printf("%s gpu_save_vs_bound %.3f ratio\n", bench, std::max(d2h, raw_w) / ds);
  std::printf("%s gpu_load_vs_bound %.3f ratio\n", bench, std::max(h2d, raw_r) / dl);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("gpu_save_load", Main, argc, argv); }
