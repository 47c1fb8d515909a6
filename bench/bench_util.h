// Small helpers shared by the benchmarks: wall-clock timing, plain POSIX file I/O for the raw
// baselines, /proc/self/status readings, scratch folders on /dev/shm. Header-only.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace dcpp_bench {

// A tensor a benchmark makes: its key, dtype and shape.
struct Spec {
  std::string name;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  int64_t nbytes() const {
    int64_t n = c10::elementSize(dtype);
    for (int64_t s : shape) n *= s;
    return n;
  }
};


// Deterministic content, cheap to make (an RNG fill of 2 GiB takes ~10 s on one core), the
// same bench/dcp_baseline.py gives tensor i: frac(k * golden + i * 0.37) for element k. Any
// tensor can be regenerated alone.
inline at::Tensor GoldenTensor(const Spec& s, size_t i) {
  int64_t numel = 1;
  for (int64_t d : s.shape) numel *= d;
  at::Tensor t = at::arange(numel, at::kFloat).mul_(0.6180339887).add_(0.37 * static_cast<double>(i)).frac_();
  return t.to(s.dtype).reshape(s.shape).contiguous();
}

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds `fn` takes.
inline double Time(const std::function<void()>& fn) {
  const double t0 = Now();
  fn();
  return Now() - t0;
}

// The best (smallest) of `reps` timings of `fn`; `before` runs untimed ahead of each one.
inline double BestOf(int reps, const std::function<void()>& before, const std::function<void()>& fn) {
  double best = 1e300;
  for (int i = 0; i < reps; ++i) {
    if (before) before();
    best = std::min(best, Time(fn));
  }
  return best;
}

inline double GBps(int64_t bytes, double seconds) { return static_cast<double>(bytes) / seconds / 1e9; }
inline double MiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

[[noreturn]] inline void Fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// `s` quoted for the shell.
inline std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A benchmark's Python script: as given (relative to the working directory, the runfiles tree
// under `bazel run`), else under the workspace named by BUILD_WORKSPACE_DIRECTORY.
inline std::string FindScript(const std::string& arg) {
  if (std::filesystem::exists(arg)) return std::filesystem::absolute(arg).string();
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    const std::string p = std::string(ws) + "/" + arg;
    if (std::filesystem::exists(p)) return p;
  }
  throw std::runtime_error("cannot find the Python script '" + arg + "'");
}

// "'<python>' '<script>'": $DCPP_PYTHON, else python3, running the script FindScript finds.
inline std::string PythonCommand(const std::string& script) {
  const char* py = std::getenv("DCPP_PYTHON");
  return Quote(py != nullptr && *py ? py : "python3") + " " + Quote(FindScript(script));
}

// The tensors a benchmark makes, as JSON for its Python baseline:
// [{"name", "dtype" ("float32" or "bfloat16"), "shape"}, ...].
inline void WriteSpecJson(const std::string& path, const std::vector<Spec>& specs) {
  nlohmann::json j = nlohmann::json::array();
  for (const Spec& s : specs) {
    j.push_back({{"name", s.name}, {"dtype", s.dtype == c10::ScalarType::Float ? "float32" : "bfloat16"}, {"shape", s.shape}});
  }
  std::ofstream(path) << j.dump();
}

// Runs the shell command `cmd`, echoing its output lines ("  | ..."), and returns the rest of
// its last line that starts with `tag` (a child's machine-readable result); throws if the
// command fails or prints no such line.
inline std::string RunTagged(const std::string& cmd, const std::string& tag) {
  std::printf("  $ %s\n", cmd.c_str());
  std::fflush(stdout);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) Fail("popen");
  std::string line, last;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p) != nullptr) {
    line += buf;
    if (!line.empty() && line.back() == '\n') {
      if (line.compare(0, tag.size(), tag) == 0) {
        last = line.substr(tag.size());
      } else {
        std::printf("  | %s", line.c_str());
        std::fflush(stdout);
      }
      line.clear();
    }
  }
  const int rc = ::pclose(p);
  if (rc != 0 || last.empty()) {
    throw std::runtime_error("command failed (status " + std::to_string(rc) + "): " + cmd);
  }
  return last;
}

inline void WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) Fail("write");
    p += k;
    n -= static_cast<size_t>(k);
  }
}

inline void ReadAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::read(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) Fail("read");
    p += k;
    n -= static_cast<size_t>(k);
  }
}

inline void PreadAll(int fd, void* data, size_t n, uint64_t offset) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) Fail("pread");
    p += k;
    offset += static_cast<uint64_t>(k);
    n -= static_cast<size_t>(k);
  }
}

// Runs jobs[t] on its own thread (job 0 on the calling thread) and waits for all of them.
inline void RunParallel(const std::vector<std::function<void()>>& jobs) {
  std::vector<std::thread> threads;
  for (size_t t = 1; t < jobs.size(); ++t) threads.emplace_back(jobs[t]);
  if (!jobs.empty()) jobs[0]();
  for (auto& th : threads) th.join();
}

// Splits items of the given sizes into `parts` groups balanced by size: largest first to the
// lightest group, then each group back in item order (what dcpp's default planner does).
inline std::vector<std::vector<size_t>> Balance(const std::vector<int64_t>& sizes, int parts) {
  std::vector<size_t> order(sizes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<std::vector<size_t>> groups(static_cast<size_t>(std::max(parts, 1)));
  std::vector<int64_t> load(groups.size(), 0);
  for (size_t i : order) {
    const size_t g = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    groups[g].push_back(i);
    load[g] += sizes[i];
  }
  for (auto& g : groups) std::sort(g.begin(), g.end());
  return groups;
}

// The raw baseline: the tensors' bytes written to (read from) one file per thread in `dir`,
// grouped as Balance does, with plain sequential write()/read() (and an fsync, as dcpp does).
inline std::vector<std::vector<size_t>> RawGroups(const std::vector<at::Tensor>& ts, int threads) {
  std::vector<int64_t> sizes;
  for (const at::Tensor& t : ts) sizes.push_back(static_cast<int64_t>(t.nbytes()));
  return Balance(sizes, threads);
}

// With `each_block` set, the bytes go through write() (read()) in blocks of `block` bytes and
// each_block(tensor index, block, length) runs right after its block's call, on the same thread
// (the hashed baselines of bench/save_load.cc).
using BlockFn = std::function<void(size_t, const void*, size_t)>;

// io(p, n) over the `n` bytes at `p` (item `index`): in one call, or with `each_block` set in
// calls of `block` bytes, each followed by each_block(index, block start, its length).
template <typename Ptr, typename Io>
void InBlocks(Ptr p, size_t n, size_t index, const BlockFn& each_block, size_t block, const Io& io) {
  if (!each_block) {
    io(p, n);
    return;
  }
  for (size_t o = 0; o < n; o += block) {
    const size_t len = std::min(block, n - o);
    io(p + o, len);
    each_block(index, p + o, len);
  }
}

inline void RawWrite(const std::string& dir, const std::vector<at::Tensor>& ts, int threads,
                     const BlockFn& each_block = nullptr, size_t block = 0) {
  const auto groups = RawGroups(ts, threads);
  std::vector<std::function<void()>> jobs;
  for (size_t g = 0; g < groups.size(); ++g) {
    jobs.push_back([&, g] {
      const std::string path = dir + "/raw_" + std::to_string(g) + ".bin";
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) Fail("open " + path);
      for (size_t i : groups[g]) {
        InBlocks(static_cast<const char*>(ts[i].const_data_ptr()), ts[i].nbytes(), i, each_block, block,
                 [&](const char* p, size_t n) { WriteAll(fd, p, n); });
      }
      if (::fsync(fd) != 0) Fail("fsync " + path);
      ::close(fd);
    });
  }
  RunParallel(jobs);
}

inline void RawRead(const std::string& dir, std::vector<at::Tensor>& ts, int threads,
                    const BlockFn& each_block = nullptr, size_t block = 0) {
  const auto groups = RawGroups(ts, threads);
  std::vector<std::function<void()>> jobs;
  for (size_t g = 0; g < groups.size(); ++g) {
    jobs.push_back([&, g] {
      const std::string path = dir + "/raw_" + std::to_string(g) + ".bin";
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) Fail("open " + path);
      for (size_t i : groups[g]) {
        InBlocks(static_cast<char*>(ts[i].mutable_data_ptr()), ts[i].nbytes(), i, each_block, block,
                 [&](char* p, size_t n) { ReadAll(fd, p, n); });
      }
      ::close(fd);
    });
  }
  RunParallel(jobs);
}

// A value in kB from /proc/self/status ("VmRSS", "VmHWM"), in bytes; -1 if absent.
inline int64_t StatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, field.size() + 1, field + ":") == 0) {
      return std::stoll(line.substr(field.size() + 1)) * 1024;
    }
  }
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0). Returns false where that is not allowed.
inline bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// A fresh scratch folder under /dev/shm (falling back to /tmp), removed by the destructor.
class ScratchDir {
 public:
  // Under `in` when given, else /dev/shm (or /tmp without it).
  explicit ScratchDir(const std::string& tag, const std::string& in = "") {
    const std::string base = !in.empty() ? in : std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    path_ = base + "/dcpp_bench_" + tag + "_" + std::to_string(::getpid());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Empties (or creates) a folder.
inline void ResetDir(const std::string& dir) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
}

// Runs a benchmark's Main, turning an exception into a message naming the benchmark and exit 1.
inline int RunMain(const char* name, int (*main_fn)(int, char**), int argc, char** argv) {
  try {
    return main_fn(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s failed: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace dcpp_bench
