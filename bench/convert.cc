// convert: the `convert` command (scripts/convert) turning a ~4 GiB FSDP checkpoint saved by 8
// ranks into tensor parallel over 4 ranks with --memory-budget 512M, on /dev/shm.
//
//   bazel run -c opt //bench:convert [-- --gib=4 --budget_mib=512 --reps=2]
//
// The source is a transformer with torchtitan names (tok_embeddings, layers.N.attention.wq..wo,
// layers.N.feed_forward.w1..w3, norms, output; matrices bfloat16, norms float32), so that the
// embedded planners/fsdp_to_tp.lua gives column-wise, row-wise and replicated targets. This
// process builds it and saves it as 8 FSDP ranks would (the Shard(0) chunk of every tensor for
// ranks 0..7, rank r's chunks in file __r_0.distcp, through a small save planner written next
// to the data), then frees the tensors. The conversion runs as a child process, the real CLI
// `convert SRC DST --world-size 4 --memory-budget 512M --quiet` found in this binary's runfiles,
// started by a small launcher process (see RunChild): its time is from fork to exit and its peak
// RSS is wait4()'s ru_maxrss.
//
// Baseline, in the same run: a plain copy of the source folder's files (read() + write() through
// a 1 MiB and a 64 MiB buffer, in this process) into another folder; the faster is the baseline.
// Copies and conversions alternate, each into an empty folder and after an untimed warm-up of
// the same operation (see Main: free memory on this VM is not all alike); each figure is the best
// of --reps. Figures:
//   convert_vs_copy             conversion throughput / copy throughput     target >= 0.7
//   convert_peak_rss_vs_limit   peak RSS / (1.25 x budget + 100 MiB)        target <= 1
//   convert_peak_rss_mib        peak RSS of the conversion, MiB (a memory figure, not a time)
//   convert_dcp_format_vs_native  time of the conversion / time of the same conversion with
//                               `--format dcp` (PyTorch DCP's format), best against best; the
//                               DCP-format runs alternate with the others   target >= 0.9
// Also printed: the RSS of `convert --help` (LibTorch loaded, nothing else). At the end, one
// column-wise, one row-wise and one replicated key of the result are loaded for one TP rank and
// compared with the source tensors.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
#include "core/format/metadata.h"
#include "core/tools/convert.h"

extern char** environ;

namespace {

using namespace dcpp_bench;

constexpr int kSourceRanks = 8;
constexpr int kTargetRanks = 4;
// Buffer sizes of the plain copy; the faster is the baseline.
constexpr int64_t kCopyBuffers[] = {int64_t{1} << 20, int64_t{64} << 20};

// Llama-7B-like widths (4096, 11008, vocabulary 32000), halved together until the embeddings
// and 4 layers fit in the target size, then as many layers as fill it. Every dimension stays
// divisible by 8, so each Shard(0) chunk of 8 ranks and each TP shard of 4 is even.
struct Dims {
  int64_t dim = 4096, ffn = 11008, vocab = 32000, layers = 0;
  int64_t EmbeddingBytes() const { return 2 * vocab * dim * 2; }
  int64_t LayerBytes() const { return (4 * dim * dim + 3 * ffn * dim) * 2 + 2 * dim * 4; }
};

Dims ChooseDims(double gib) {
  const int64_t target = static_cast<int64_t>(gib * (int64_t{1} << 30));
  Dims d;
  while (d.dim > 256 && d.EmbeddingBytes() + 4 * d.LayerBytes() > target) {
    d.dim /= 2;
    d.ffn /= 2;
    d.vocab /= 2;
  }
  d.layers = std::max<int64_t>(
      1, std::llround(static_cast<double>(target - d.EmbeddingBytes()) / static_cast<double>(d.LayerBytes())));
  return d;
}

std::vector<Spec> MakeSpecs(const Dims& d) {
  const c10::ScalarType w = at::kBFloat16, n = at::kFloat;
  std::vector<Spec> specs = {{"tok_embeddings.weight", w, {d.vocab, d.dim}}};
  for (int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* m : {"wq", "wk", "wv", "wo"}) specs.push_back({p + "attention." + m + ".weight", w, {d.dim, d.dim}});
    specs.push_back({p + "feed_forward.w1.weight", w, {d.ffn, d.dim}});
    specs.push_back({p + "feed_forward.w2.weight", w, {d.dim, d.ffn}});
    specs.push_back({p + "feed_forward.w3.weight", w, {d.ffn, d.dim}});
    specs.push_back({p + "attention_norm.weight", n, {d.dim}});
    specs.push_back({p + "ffn_norm.weight", n, {d.dim}});
  }
  specs.push_back({"norm.weight", n, {d.dim}});
  specs.push_back({"output.weight", w, {d.vocab, d.dim}});
  return specs;
}

// Deterministic content that differs along both dimensions, made in one pass over the tensor:
// frac(frac(row * golden) + frac(col * 0.0137 + i * 0.37)).
at::Tensor Generate(const Spec& s, size_t i) {
  const int64_t rows = s.shape[0], cols = s.shape.size() > 1 ? s.shape[1] : 1;
  const at::Tensor r = at::arange(rows, at::kFloat).mul_(0.6180339887).frac_().unsqueeze(1);
  const at::Tensor c = at::arange(cols, at::kFloat).mul_(0.0137).add_(0.37 * static_cast<double>(i)).frac_();
  return at::add(r, c).frac_().to(s.dtype).reshape(s.shape).contiguous();
}

// A save planner that places every chunk in the file its FSDP rank would write: the Shard(0)
// chunk of rank r (offsets[1] = r * shape[1] / 8) in __r_<n>.distcp.
constexpr const char* kPerRankFilesPlanner = R"lua(
local P = {}
function P.save_local(ctx, items) return items end
function P.save_global(ctx, plans)
  local out = {}
  for r = 1, #plans do
    out[r] = {}
    for _, it in ipairs(plans[r]) do
      local rank = math.floor(it.offsets[1] * %d / it.shape[1])
      it.file = string.format("__%%d_%%d.distcp", rank, ctx.first_file_index)
      out[r][#out[r] + 1] = it
    end
  end
  return out
end
return P
)lua";

void SaveFsdp(const std::vector<Spec>& specs, const std::vector<at::Tensor>& tensors, const std::string& dir,
              const std::string& planner_path) {
  char script[2048];
  std::snprintf(script, sizeof script, kPerRankFilesPlanner, kSourceRanks);
  std::ofstream(planner_path) << script;
  dcpp::StateDict sd;
  const dcpp::Layout fsdp = dcpp::Layout::Sharded(kSourceRanks, 0);
  for (size_t i = 0; i < specs.size(); ++i) {
    for (int r = 0; r < kSourceRanks; ++r) sd.AddSharded(specs[i].name, tensors[i], fsdp, r);
  }
  dcpp::SaveOptions opt;
  opt.thread_count = 2;
  opt.planner = planner_path;
  dcpp::save(sd, dir, opt);
}

// ---- the child process ----
//
// ru_maxrss is not the child's own peak when a big process spawns it: exec records the peak of
// the memory image it replaces, and posix_spawn (vfork) children exec from the parent's image,
// so every child would report at least this process's peak (the whole source, at full size).
// The child is therefore started by a launcher: this binary re-executed with kLaunchFlag (a
// fresh, small image) forks and execs the command, waits for it with wait4() and prints its
// status, wall time, ru_maxrss and CPU times. Its own footprint (LibTorch loaded, nothing allocated) is
// below that of the command, which loads the same LibTorch, so the max is the command's own
// peak; `convert --help`, measured the same way, shows that floor.

constexpr const char* kLaunchFlag = "--launch";
constexpr const char* kLaunchTag = "LAUNCH ";

// argv: --launch LOG CMD [ARGS...]. Runs CMD with its stdout and stderr in LOG; prints
// "LAUNCH <wait status> <seconds> <ru_maxrss KiB> <user CPU seconds> <system CPU seconds>".
int Launch(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: convert --launch LOG CMD [ARGS...]\n";
    return 2;
  }
  const double t0 = Now();
  const pid_t pid = ::fork();
  if (pid < 0) Fail("fork");
  if (pid == 0) {  // only async-signal-safe calls until exec
    const int fd = ::open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ::dup2(fd, 1) < 0 || ::dup2(fd, 2) < 0) ::_exit(126);
    ::execv(argv[3], argv + 3);
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  while (::wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) Fail("wait4");
  }
  const double secs = Now() - t0;
  auto cpu = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + 1e-6 * static_cast<double>(tv.tv_usec); };
  std::printf("%s%d %.6f %ld %.3f %.3f\n", kLaunchTag, status, secs, static_cast<long>(ru.ru_maxrss),
              cpu(ru.ru_utime), cpu(ru.ru_stime));
  return 0;
}

struct ChildRun {
  double seconds = 0;    // fork to exit
  int64_t peak_rss = 0;  // ru_maxrss, bytes
  double user_cpu = 0, system_cpu = 0;  // seconds, all its threads
  std::string output;    // its stdout and stderr
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs argv through the launcher, with its output in `log`; throws (with the output's tail)
// unless it exits 0.
ChildRun RunChild(const std::vector<std::string>& argv, const std::string& log) {
  std::string cmd;
  for (const std::string& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string result = log + ".launch";
  std::vector<std::string> full = {self, kLaunchFlag, log};
  full.insert(full.end(), argv.begin(), argv.end());
  std::vector<char*> args;
  for (const std::string& a : full) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, result.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int err = ::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) {
    errno = err;
    Fail("posix_spawn " + self);
  }
  int launcher_status = 0;
  while (::waitpid(pid, &launcher_status, 0) < 0) {
    if (errno != EINTR) Fail("waitpid");
  }
  const std::string line = ReadFile(result);
  ChildRun run;
  run.output = ReadFile(log);
  int status = -1;
  long maxrss_kib = 0;
  const size_t at = line.rfind(kLaunchTag);
  if (launcher_status != 0 || at == std::string::npos) {
    throw std::runtime_error("the launcher failed for: " + cmd + "\n" + line);
  }
  std::istringstream(line.substr(at + std::strlen(kLaunchTag))) >> status >> run.seconds >> maxrss_kib >>
      run.user_cpu >> run.system_cpu;
  run.peak_rss = static_cast<int64_t>(maxrss_kib) * 1024;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const size_t keep = 2000;
    const std::string tail = run.output.size() > keep ? run.output.substr(run.output.size() - keep) : run.output;
    throw std::runtime_error(cmd + " failed (wait status " + std::to_string(status) + "):\n" + tail);
  }
  return run;
}

// scripts/convert, a data dependency: in this binary's runfiles tree (RUNFILES_DIR, else next to
// the binary), else relative to the working directory (`bazel run` starts in the runfiles tree).
std::string FindConvert() {
  const std::string rel = "dcpp/scripts/convert";
  std::vector<std::string> candidates;
  if (const char* d = std::getenv("RUNFILES_DIR")) candidates.push_back(std::string(d) + "/" + rel);
  candidates.push_back(std::filesystem::read_symlink("/proc/self/exe").string() + ".runfiles/" + rel);
  candidates.push_back("scripts/convert");
  for (const std::string& c : candidates) {
    if (std::filesystem::is_regular_file(c) && ::access(c.c_str(), X_OK) == 0) {
      return std::filesystem::absolute(c).string();
    }
  }
  throw std::runtime_error("cannot find scripts/convert in the runfiles (looked for " + candidates[0] + ", ...)");
}

// The seconds the command reports itself ("... in 12.34s, ..."), or -1.
double ReportedSeconds(const std::string& output) {
  const size_t at = output.rfind(" in ");
  const size_t s = output.find("s,", at == std::string::npos ? 0 : at);
  if (at == std::string::npos || s == std::string::npos) return -1;
  const size_t num = output.rfind(' ', s);
  try {
    return std::stod(output.substr(num + 1, s - num - 1));
  } catch (const std::exception&) {
    return -1;
  }
}

// ---- the baseline: a plain copy of the source folder's files ----

// Copies every file of `from` into `to` with read() and write() through buf[0, buf_bytes).
int64_t CopyFiles(const std::string& from, const std::string& to, char* buf, int64_t buf_bytes) {
  int64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(from)) {
    if (!e.is_regular_file()) continue;
    const std::string src = e.path().string(), dst = to + "/" + e.path().filename().string();
    const int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) Fail("open " + src);
    const int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) Fail("open " + dst);
    for (;;) {
      const ssize_t k = ::read(in, buf, static_cast<size_t>(buf_bytes));
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) Fail("read " + src);
      if (k == 0) break;
      WriteAll(out, buf, static_cast<size_t>(k));
      bytes += k;
    }
    if (::fsync(out) != 0) Fail("fsync " + dst);  // as the conversion does
    ::close(out);
    ::close(in);
  }
  return bytes;
}

int64_t FolderBytes(const std::string& dir) {
  int64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file()) n += static_cast<int64_t>(e.file_size());
  }
  return n;
}

// ---- checks on the result ----

// Target layouts of the converted checkpoint, as "Shard(0)@[4]" -> number of keys.
std::map<std::string, int> TargetLayouts(const std::string& dir) {
  const dcpp::proto::Metadata md = dcpp::ParseMetadata(dcpp::FileSystemReader(dir).ReadMetadata(), dir);
  std::map<std::string, int> count;
  for (const auto& t : md.tensors()) {
    std::vector<std::vector<int64_t>> offsets, sizes;
    for (const auto& c : t.chunks()) {
      offsets.emplace_back(c.offsets().begin(), c.offsets().end());
      sizes.emplace_back(c.sizes().begin(), c.sizes().end());
    }
    ++count[dcpp::DescribeChunking({t.shape().begin(), t.shape().end()}, offsets, sizes)];
  }
  return count;
}

// Loads `name` as rank `rank` of `layout` from `dir` and compares it with that part of `full`.
bool LoadsAs(const std::string& dir, const std::string& name, const at::Tensor& full, const dcpp::Layout& layout,
             int rank) {
  dcpp::StateDict sd;
  sd.AddUnallocated(name, full.scalar_type(), full.sizes().vec(), layout, rank);
  dcpp::load(sd, dir);
  const dcpp::LocalChunk& c = sd.FindTensor(name)->chunks.at(0);
  at::Tensor want = full;
  for (size_t d = 0; d < c.box.sizes.size(); ++d) {
    want = want.narrow(static_cast<int64_t>(d), c.box.offsets[d], c.box.sizes[d]);
  }
  return at::equal(c.tensor, want);
}

int Main(int argc, char** argv) {
  double gib = 4;
  int64_t budget_mib = 512;
  int reps = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--gib=", 0) == 0) {
      gib = std::stod(a.substr(6));
    } else if (a.rfind("--budget_mib=", 0) == 0) {
      budget_mib = std::stoll(a.substr(13));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::stoi(a.substr(7));
    } else {
      std::cerr << "usage: convert [--gib=4] [--budget_mib=512] [--reps=2]\n";
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as it happens, even through a pipe
  const std::string convert = FindConvert();
  ScratchDir scratch("convert");
  const std::string src = scratch.Sub("fsdp"), copy_dir = scratch.Sub("copy"), dst = scratch.Sub("tp");
  const Dims dims = ChooseDims(gib);
  const std::vector<Spec> specs = MakeSpecs(dims);
  int64_t bytes = 0;
  for (const Spec& s : specs) bytes += s.nbytes();
  std::printf("convert: %zu tensors (%lld layers, dim %lld, ffn %lld, vocab %lld), %.0f MiB, FSDP %d ranks -> "
              "TP %d ranks, budget %lld MiB, in %s, best of %d\n",
              specs.size(), static_cast<long long>(dims.layers), static_cast<long long>(dims.dim),
              static_cast<long long>(dims.ffn), static_cast<long long>(dims.vocab), MiB(bytes), kSourceRanks,
              kTargetRanks, static_cast<long long>(budget_mib), scratch.path().c_str(), reps);

  // Build and save the source; keep only the tensors checked at the end.
  const std::string colwise = "layers.0.feed_forward.w1.weight", rowwise = "layers.0.attention.wo.weight",
                    replicated = "layers.0.attention_norm.weight";
  std::map<std::string, at::Tensor> kept;
  {
    double t0 = Now();
    std::vector<at::Tensor> tensors;
    for (size_t i = 0; i < specs.size(); ++i) tensors.push_back(Generate(specs[i], i));
    const double gen = Now() - t0;
    t0 = Now();
    SaveFsdp(specs, tensors, src, scratch.Sub("per_rank_files.lua"));
    std::printf("generated in %.1f s, saved as %d FSDP ranks in %.1f s\n", gen, kSourceRanks, Now() - t0);
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].name == colwise || specs[i].name == rowwise || specs[i].name == replicated) {
        kept[specs[i].name] = tensors[i];
      }
    }
  }
  const int64_t src_bytes = FolderBytes(src);
  int src_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(src)) src_files += e.is_regular_file() ? 1 : 0;
  std::printf("source: %d files, %.0f MiB on disk; this process's RSS now %.0f MiB\n", src_files, MiB(src_bytes),
              MiB(StatusBytes("VmRSS")));

  // The child's floor: LibTorch loaded, nothing converted.
  const ChildRun help = RunChild({convert, "--help"}, scratch.Sub("help.log"));

  // Copies (with each buffer size) and conversions alternate, rep by rep, so that background
  // load hits both alike. Each timed run follows an untimed run of the same operation whose
  // output it removes just before it starts, so that both write into memory in the same state:
  // on a VM with free page reporting (as here), memory left free for a moment goes back to the
  // hypervisor and costs 2-5x as much to write into again, and which pages a run gets depends on
  // what ran before it. The warm-ups show that cost; the best timed run is the figure. Only one
  // output exists at a time (each run removes the others' first): three 4 GiB outputs beside
  // the source would fill most of this machine's memory and slow every run down.
  std::vector<char> buf(static_cast<size_t>(kCopyBuffers[std::size(kCopyBuffers) - 1]), 1);  // touched
  const std::string budget_arg = std::to_string(budget_mib) + "M";
  std::vector<std::vector<double>> copy_times(std::size(kCopyBuffers)), copy_warmups(std::size(kCopyBuffers));
  int64_t copied = 0;
  const std::string dst_dcp = scratch.Sub("converted_dcp");
  auto only = [&](const std::string& out) {
    for (const std::string& d : {copy_dir, dst, dst_dcp}) {
      if (d != out) std::filesystem::remove_all(d);
    }
  };
  auto copy_once = [&](size_t b) {
    only(copy_dir);
    ResetDir(copy_dir);
    return Time([&] { copied = CopyFiles(src, copy_dir, buf.data(), kCopyBuffers[b]); });
  };
  auto convert_once = [&] {
    only(dst);
    std::filesystem::remove_all(dst);
    return RunChild({convert, src, dst, "--world-size", std::to_string(kTargetRanks), "--memory-budget", budget_arg,
                     "--quiet"},
                    scratch.Sub("convert.log"));
  };
  auto convert_dcp_once = [&] {
    only(dst_dcp);
    std::filesystem::remove_all(dst_dcp);
    return RunChild({convert, src, dst_dcp, "--world-size", std::to_string(kTargetRanks), "--memory-budget",
                     budget_arg, "--format", "dcp", "--quiet"},
                    scratch.Sub("convert_dcp.log"));
  };
  std::vector<ChildRun> runs, warmups, dcp_runs;
  for (int rep = 0; rep < reps; ++rep) {
    for (size_t b = 0; b < std::size(kCopyBuffers); ++b) {
      copy_warmups[b].push_back(copy_once(b));
      copy_times[b].push_back(copy_once(b));
    }
    warmups.push_back(convert_once());
    runs.push_back(convert_once());
    convert_dcp_once();  // (its warm-up)
    dcp_runs.push_back(convert_dcp_once());
  }
  std::filesystem::remove_all(copy_dir);
  double best_copy = 1e300;
  for (const auto& times : copy_times) best_copy = std::min(best_copy, *std::min_element(times.begin(), times.end()));
  const ChildRun* best = &runs[0];
  int64_t peak = 0;
  for (const ChildRun& r : runs) {
    if (r.seconds < best->seconds) best = &r;
    peak = std::max(peak, r.peak_rss);
  }

  auto row = [&](const std::string& what, const std::vector<double>& v, const char* fmt, double best_v,
                 const std::string& last) {
    std::printf("%-30s", what.c_str());
    for (double x : v) std::printf(fmt, x);
    std::printf(fmt, best_v);
    std::printf("  %s\n", last.c_str());
  };
  std::printf("\n%-30s", "seconds unless noted");
  for (int rep = 0; rep < reps; ++rep) std::printf("%9s", ("rep " + std::to_string(rep + 1)).c_str());
  std::printf("%9s  %s\n", "best", "GB/s (best)");
  for (size_t b = 0; b < std::size(kCopyBuffers); ++b) {
    const double t = *std::min_element(copy_times[b].begin(), copy_times[b].end());
    char gbps[32];
    std::snprintf(gbps, sizeof gbps, "%.2f", GBps(copied, t));
    row("copy, " + std::to_string(kCopyBuffers[b] >> 20) + " MiB buffer", copy_times[b], "%9.3f", t, gbps);
    row("  its warm-ups (untimed)", copy_warmups[b], "%9.3f",
        *std::min_element(copy_warmups[b].begin(), copy_warmups[b].end()), "");
  }
  std::vector<double> secs, reported, rss, user, sys;
  for (const ChildRun& r : runs) {
    secs.push_back(r.seconds);
    reported.push_back(ReportedSeconds(r.output));
    rss.push_back(MiB(r.peak_rss));
    user.push_back(r.user_cpu);
    sys.push_back(r.system_cpu);
  }
  char gbps[32];
  std::snprintf(gbps, sizeof gbps, "%.2f", GBps(bytes, best->seconds));
  row("convert (fork to exit)", secs, "%9.3f", best->seconds, gbps);
  row("  as reported by convert", reported, "%9.3f", ReportedSeconds(best->output), "(after startup)");
  row("  CPU user", user, "%9.3f", best->user_cpu, "(all threads)");
  row("  CPU system", sys, "%9.3f", best->system_cpu, "");
  row("  peak RSS, MiB", rss, "%9.0f", MiB(peak), "(max)");
  std::vector<double> warm_secs;
  for (const ChildRun& r : warmups) warm_secs.push_back(r.seconds);
  row("  its warm-ups (untimed)", warm_secs, "%9.3f", *std::min_element(warm_secs.begin(), warm_secs.end()), "");
  std::vector<double> dcp_secs;
  for (const ChildRun& r : dcp_runs) dcp_secs.push_back(r.seconds);
  const double best_dcp = *std::min_element(dcp_secs.begin(), dcp_secs.end());
  std::snprintf(gbps, sizeof gbps, "%.2f", GBps(bytes, best_dcp));
  row("convert --format dcp", dcp_secs, "%9.3f", best_dcp, gbps);
  std::printf("convert --help: %.3f s, peak RSS %.0f MiB (LibTorch loaded, nothing converted)\n", help.seconds,
              MiB(help.peak_rss));
  const double limit = 1.25 * static_cast<double>(budget_mib << 20) + static_cast<double>(100 << 20);
  std::printf("peak RSS %.0f MiB = %.0f MiB (--help) + %.0f MiB; limit 1.25 x %lld + 100 = %.0f MiB\n", MiB(peak),
              MiB(help.peak_rss), MiB(peak - help.peak_rss), static_cast<long long>(budget_mib),
              limit / (1 << 20));
  std::printf("convert's output (best run): %s", best->output.c_str());

  // The result: its layouts, and three keys loaded as TP rank 1 and compared with the source.
  // The last run left the DCP-format output; check it, then convert once more (untimed) for the
  // native one.
  const int rank = 1;
  const bool dcp_ok = LoadsAs(dst_dcp, colwise, kept[colwise], dcpp::Layout::Sharded(kTargetRanks, 0), rank) &&
                      LoadsAs(dst_dcp, rowwise, kept[rowwise], dcpp::Layout::Sharded(kTargetRanks, 1), rank);
  convert_once();
  std::string layouts;
  for (const auto& [l, n] : TargetLayouts(dst)) layouts += (layouts.empty() ? "" : ", ") + std::to_string(n) + " x " + l;
  std::printf("target layouts: %s\n", layouts.c_str());
  const bool ok = LoadsAs(dst, colwise, kept[colwise], dcpp::Layout::Sharded(kTargetRanks, 0), rank) &&
                  LoadsAs(dst, rowwise, kept[rowwise], dcpp::Layout::Sharded(kTargetRanks, 1), rank) &&
                  LoadsAs(dst, replicated, kept[replicated], dcpp::Layout::Replicated(kTargetRanks), rank);
  if (!ok) throw std::runtime_error("the converted checkpoint differs from the source");
  if (!dcp_ok) throw std::runtime_error("the checkpoint converted with --format dcp differs from the source");
  std::printf("checked %s (Shard(0)), %s (Shard(1)), %s (Replicate()) as TP rank %d: equal to the source\n",
              colwise.c_str(), rowwise.c_str(), replicated.c_str(), rank);

  const double vs_copy = GBps(bytes, best->seconds) / GBps(copied, best_copy);
  std::printf("BASELINE plain copy of the source files %.2f GB/s (%.3f s, best buffer size)\n",
              GBps(copied, best_copy), best_copy);
  std::printf("BENCH convert_vs_copy %.3f ratio\n", vs_copy);
  std::printf("BENCH convert_peak_rss_vs_limit %.3f ratio\n", static_cast<double>(peak) / limit);
  std::printf("BENCH convert_peak_rss_mib %.0f MiB\n", MiB(peak));
  std::printf("BENCH convert_dcp_format_vs_native %.3f ratio\n", best->seconds / best_dcp);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == kLaunchFlag) {
    return dcpp_bench::RunMain("convert --launch", Launch, argc, argv);
  }
  return dcpp_bench::RunMain("convert", Main, argc, argv);
}
