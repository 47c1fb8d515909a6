// disk: dcpp on the real disk (not tmpfs) against `dd` moving the same byte count with the same
// sync semantics, in the same run:
//   durable save:  dcpp::save (whose writers fsync each data file and the folder at commit)
//                  vs `dd if=SRC of=F bs=1M conv=fsync`, SRC the same bytes in /dev/shm
//   cold load:     dcpp::load (checksums verified) vs `dd if=F of=/dev/null bs=1M`, each run
//                  after posix_fadvise(POSIX_FADV_DONTNEED) on every file involved (all of them
//                  fsynced first, so their pages are clean and really dropped; mincore checks it)
// and, for reference, dd with O_DIRECT (oflag=direct / iflag=direct) on the same file, and the
// cold load again with LoadOptions::direct_io (O_DIRECT reads in 4 MiB requests).
//
//   bazel run -c opt //bench:disk [-- --mib=1024 --reps=5 --dir=/var/tmp --threads=1,2]
//
// The data (~--mib MiB of 16 MiB float32 tensors) goes to a fresh folder under --dir, removed at
// the end; a --dir on tmpfs is refused. dd and dcpp runs are interleaved rep by rep (the order
// rotating); each figure is the median of --reps runs (min..max printed beside it), dcpp's the
// best median over the --threads counts. Ratios are dd time / dcpp time (>= 0.9 is the target);
// disk_load_direct_vs_dd is the direct_io load against the same buffered dd read.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/dcpp.h"

namespace {

using namespace dcpp_bench;

// Every regular file under `path` (or `path` itself).
std::vector<std::string> FilesUnder(const std::string& path) {
  std::vector<std::string> out;
  if (std::filesystem::is_regular_file(path)) return {path};
  for (const auto& e : std::filesystem::recursive_directory_iterator(path)) {
    if (e.is_regular_file()) out.push_back(e.path().string());
  }
  return out;
}

// Pages of `path` resident in the page cache, and its pages in all.
std::pair<int64_t, int64_t> Resident(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail("open " + path);
  struct stat st {};
  ::fstat(fd, &st);
  const int64_t page = ::sysconf(_SC_PAGESIZE);
  const int64_t pages = (st.st_size + page - 1) / page;
  int64_t in = 0;
  if (pages > 0) {
    void* m = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) Fail("mmap " + path);
    std::vector<unsigned char> v(static_cast<size_t>(pages));
    if (::mincore(m, static_cast<size_t>(st.st_size), v.data()) != 0) Fail("mincore " + path);
    for (unsigned char c : v) in += c & 1;
    ::munmap(m, static_cast<size_t>(st.st_size));
  }
  ::close(fd);
  return {in, pages};
}

// Drops the page cache of every file under `path` (fsynced first, so the pages are clean) and
// returns the fraction of their pages still resident afterwards.
double DropCache(const std::string& path) {
  int64_t in = 0, all = 0;
  for (const std::string& f : FilesUnder(path)) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) Fail("open " + f);
    if (::fsync(fd) != 0) Fail("fsync " + f);
    if (::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0) Fail("posix_fadvise " + f);
    ::close(fd);
    const auto [i, a] = Resident(f);
    in += i;
    all += a;
  }
  return all == 0 ? 0.0 : static_cast<double>(in) / static_cast<double>(all);
}

void Shell(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("command failed: " + cmd);
}

struct Series {
  std::vector<double> t;
  double Median() const {
    std::vector<double> s = t;
    std::sort(s.begin(), s.end());
    return s.empty() ? 0 : (s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2);
  }
  double Min() const { return *std::min_element(t.begin(), t.end()); }
  double Max() const { return *std::max_element(t.begin(), t.end()); }
};

void Print(const char* what, const Series& s, int64_t bytes) {
  std::printf("%-28s median %7.3f s %6.2f GB/s   (min %.3f s, max %.3f s, %zu runs)\n", what, s.Median(),
              GBps(bytes, s.Median()), s.Min(), s.Max(), s.t.size());
}

int Main(int argc, char** argv) {
  int64_t mib = 1024;
  int reps = 5;
  std::string base = "/var/tmp";
  std::vector<int> thread_counts = {1, 2};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--mib=", 0) == 0) {
      mib = std::stoll(a.substr(6));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::stoi(a.substr(7));
    } else if (a.rfind("--dir=", 0) == 0) {
      base = a.substr(6);
    } else if (a.rfind("--threads=", 0) == 0) {
      thread_counts.clear();
      std::stringstream ss(a.substr(10));
      for (std::string t; std::getline(ss, t, ',');) thread_counts.push_back(std::stoi(t));
    } else {
      std::cerr << "usage: disk [--mib=N] [--reps=N] [--dir=DIR] [--threads=1,2]\n";
      return 2;
    }
  }
  if (mib < 16 || reps < 1 || thread_counts.empty()) throw std::runtime_error("need --mib >= 16, --reps >= 1");
  at::set_num_threads(1);  // the benchmark's parallelism is the engine's thread_count

  struct statfs fs {};
  if (::statfs(base.c_str(), &fs) != 0) Fail("statfs " + base);
  if (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC) {
    throw std::runtime_error(base + " is a tmpfs/ramfs, not a disk: pass --dir=<a folder on a disk>");
  }
  const std::string root = base + "/dcpp_bench_disk_" + std::to_string(::getpid());
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{root};

  // 16 MiB float32 tensors.
  std::vector<Spec> specs;
  for (int64_t i = 0; i < mib / 16; ++i) specs.push_back({"layers." + std::to_string(i) + ".weight", at::kFloat, {2048, 2048}});
  std::vector<at::Tensor> src, dst;
  int64_t bytes = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    src.push_back(GoldenTensor(specs[i], i));
    dst.push_back(at::zeros(specs[i].shape, at::kFloat));
    bytes += specs[i].nbytes();
  }
  dcpp::StateDict src_sd, dst_sd;
  for (size_t i = 0; i < specs.size(); ++i) {
    src_sd.AddTensor(specs[i].name, src[i]);
    dst_sd.AddTensor(specs[i].name, dst[i]);
  }
  std::printf("disk: %s (%lld MiB in %zu tensors), dcpp thread counts", root.c_str(),
              static_cast<long long>(bytes >> 20), specs.size());
  for (int t : thread_counts) std::printf(" %d", t);
  std::printf(", %d reps\n", reps);

  // dd's source: the tensors' bytes in a file in memory (/dev/shm when there is one), so that dd
  // copies real data from memory as dcpp does. (Not /dev/zero: a virtual disk may treat blocks
  // of zeros specially; on the machine this was written on, zeros wrote 3x slower.)
  const std::string shm_src = "/dev/shm/dcpp_bench_disk_src_" + std::to_string(::getpid());
  const std::string dd_src = std::filesystem::is_directory("/dev/shm") ? shm_src : root + "/src.bin";
  struct CleanupSrc {
    std::string path;
    ~CleanupSrc() {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
  } cleanup_src{dd_src};
  {
    const int fd = ::open(dd_src.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) Fail("open " + dd_src);
    for (const at::Tensor& t : src) WriteAll(fd, t.const_data_ptr(), t.nbytes());
    ::close(fd);
  }
  const std::string dd_file = root + "/dd.bin";
  const std::string ckpt = root + "/ckpt";
  const std::string dd_w = "dd if=" + Quote(dd_src) + " of=" + Quote(dd_file) + " bs=1M conv=fsync status=none";
  const std::string dd_r = "dd if=" + Quote(dd_file) + " of=/dev/null bs=1M status=none";
  Series dd_save, dd_load, dd_direct_save, dd_direct_load;
  std::map<int, Series> dcpp_save, dcpp_load, dcpp_load_direct;
  double worst_resident = 0;
  auto cold = [&](const std::string& path) {
    worst_resident = std::max(worst_resident, DropCache(path));
  };
  auto check = [&](int rep, const char* how) {
    if (rep != 0) return;
    for (size_t i = 0; i < src.size(); ++i) {
      if (!at::equal(src[i], dst[i])) throw std::runtime_error("loaded " + specs[i].name + how + " differs");
    }
  };
  // The steps of one rep; each rep starts one step later (on a shared virtual disk, what ran
  // just before a run changes it: a rotation gives every step every position).
  std::vector<std::function<void(int)>> steps;
  steps.push_back([&](int) {  // dd, buffered, with fsync
    std::filesystem::remove(dd_file);
    ::sync();
    dd_save.t.push_back(Time([&] { Shell(dd_w); }));
    cold(dd_file);
    dd_load.t.push_back(Time([&] { Shell(dd_r); }));
    std::filesystem::remove(dd_file);
  });
  steps.push_back([&](int) {  // dd with O_DIRECT, for reference (fails where O_DIRECT is refused)
    std::filesystem::remove(dd_file);
    ::sync();
    dd_direct_save.t.push_back(Time([&] { Shell(dd_w + " oflag=direct"); }));
    cold(dd_file);
    dd_direct_load.t.push_back(Time([&] { Shell(dd_r + " iflag=direct"); }));
    std::filesystem::remove(dd_file);
  });
  for (int threads : thread_counts) {
    steps.push_back([&, threads](int rep) {
      dcpp::SaveOptions so;
      so.thread_count = threads;
      std::filesystem::remove_all(ckpt);
      ::sync();
      dcpp_save[threads].t.push_back(Time([&] { dcpp::save(src_sd, ckpt, so); }));
      dcpp::LoadOptions lo;
      lo.thread_count = threads;  // verify_checksums stays on (the default)
      for (at::Tensor& t : dst) t.zero_();
      cold(ckpt);
      dcpp_load[threads].t.push_back(Time([&] { dcpp::load(dst_sd, ckpt, lo); }));
      check(rep, "");
      // The same load with LoadOptions::direct_io (O_DIRECT, 4 MiB requests).
      lo.direct_io = true;
      for (at::Tensor& t : dst) t.zero_();
      cold(ckpt);
      dcpp::LoadStats st;
      dcpp_load_direct[threads].t.push_back(Time([&] { st = dcpp::load(dst_sd, ckpt, lo); }));
      if (!st.direct_io_note.empty() && rep == 0) std::printf("direct_io: %s\n", st.direct_io_note.c_str());
      check(rep, " (direct_io)");
      std::filesystem::remove_all(ckpt);
    });
  }
  for (int rep = 0; rep < reps; ++rep) {
    for (size_t k = 0; k < steps.size(); ++k) steps[(k + rep) % steps.size()](rep);
  }
  std::printf("page cache after each drop: at most %.2f%% of the pages still resident\n", 100 * worst_resident);
  Print("dd write conv=fsync", dd_save, bytes);
  Print("dd read (cold)", dd_load, bytes);
  Print("dd write O_DIRECT conv=fsync", dd_direct_save, bytes);
  Print("dd read O_DIRECT (cold)", dd_direct_load, bytes);
  int best_save = thread_counts[0], best_load = thread_counts[0], best_direct = thread_counts[0];
  for (int t : thread_counts) {
    Print(("dcpp save threads=" + std::to_string(t)).c_str(), dcpp_save[t], bytes);
    Print(("dcpp load threads=" + std::to_string(t) + " (cold)").c_str(), dcpp_load[t], bytes);
    Print(("dcpp load threads=" + std::to_string(t) + " direct_io").c_str(), dcpp_load_direct[t], bytes);
    if (dcpp_save[t].Median() < dcpp_save[best_save].Median()) best_save = t;
    if (dcpp_load[t].Median() < dcpp_load[best_load].Median()) best_load = t;
    if (dcpp_load_direct[t].Median() < dcpp_load_direct[best_direct].Median()) best_direct = t;
  }
  const Series& d = dcpp_load_direct[best_direct];
  const Series& s = dcpp_save[best_save];
  const Series& l = dcpp_load[best_load];
  std::printf("save: dd %.2f GB/s, dcpp %.2f GB/s (threads=%d); spread of the ratio over runs %.3f..%.3f\n",
              GBps(bytes, dd_save.Median()), GBps(bytes, s.Median()), best_save, dd_save.Min() / s.Max(),
              dd_save.Max() / s.Min());
  std::printf("load: dd %.2f GB/s, dcpp %.2f GB/s (threads=%d); spread of the ratio over runs %.3f..%.3f\n",
              GBps(bytes, dd_load.Median()), GBps(bytes, l.Median()), best_load, dd_load.Min() / l.Max(),
              dd_load.Max() / l.Min());
  std::printf("load direct_io: dd %.2f GB/s, dcpp %.2f GB/s (threads=%d); spread of the ratio over runs %.3f..%.3f\n",
              GBps(bytes, dd_load.Median()), GBps(bytes, d.Median()), best_direct, dd_load.Min() / d.Max(),
              dd_load.Max() / d.Min());
  std::printf("BASELINE dd on this disk: write+fsync %.2f GB/s (O_DIRECT %.2f), cold read %.2f GB/s (O_DIRECT %.2f)\n",
              GBps(bytes, dd_save.Median()), GBps(bytes, dd_direct_save.Median()), GBps(bytes, dd_load.Median()),
              GBps(bytes, dd_direct_load.Median()));
  std::printf("BENCH disk_save_vs_dd %.3f ratio\n", dd_save.Median() / s.Median());
  std::printf("BENCH disk_load_vs_dd %.3f ratio\n", dd_load.Median() / l.Median());
  std::printf("BENCH disk_load_direct_vs_dd %.3f ratio\n", dd_load.Median() / d.Median());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return RunMain("disk", Main, argc, argv); }
