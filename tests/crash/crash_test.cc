// Crash test with real processes: a save or conversion is killed with SIGKILL at a random
// moment, and the folder must then still verify and hold exactly the previous checkpoint or
// exactly the new one; the next successful save must leave no debris of the killed one.
//
// Modes: the `convert --overwrite` command (native output on /dev/shm and on disk, PyTorch DCP
// output on disk), and a save by 3 ranks as separate processes (gloo over a TCPStore, as under
// torchrun), killed one rank or all at once. For each mode the test first measures a whole
// run, then each trial starts a run of generation k+1 over generation k, kills it at a time
// drawn uniformly from [0, 1.2 x duration] (a run may end first), inspects the folder
// (tests/crash/generation.h: verify, then every key bit for bit), runs a save of k+1 to the
// end, and counts the files it leaves.
//
// Environment: DCPP_CRASH_TRIALS runs killed per mode (default 6; a run that ends before its
// kill time is checked all the same but not counted, so CI runs ~30 trials in all),
// DCPP_CRASH_MIB checkpoint size (default 16), DCPP_CRASH_SEED (default random; printed),
// DCPP_CRASH_DISK disk folder (default TEST_TMPDIR). Each mode prints a "CRASH" summary line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/dcpp.h"
#include "tests/crash/child.h"
#include "tests/crash/generation.h"

namespace dcpp::crash {
namespace {

namespace fs = std::filesystem;

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : fallback;
}

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  DCPP_CHECK(srcdir && ws, "TEST_SRCDIR/TEST_WORKSPACE unset: run under bazel test");
  return std::string(srcdir) + "/" + ws + "/" + path;
}

std::string DiskRoot() {
  const char* d = std::getenv("DCPP_CRASH_DISK");
  if (d && *d) return d;
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// A fresh folder under `root`, removed with its content at scope exit.
class Scratch {
 public:
  explicit Scratch(const std::string& root) {
    std::string tmpl = root + "/dcpp_crash_XXXXXX";
    DCPP_CHECK(::mkdtemp(tmpl.data()) != nullptr, "cannot make a folder under ", root);
    path_ = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

int CountFiles(const std::string& dir) {
  int n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.is_directory() ? 0 : 1;
  return n;
}

std::string Listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : " ") + n;
  return s;
}

struct Mode {
  std::string name;
  std::string root;  // the folder's parent: /dev/shm or disk
  Format format;
  int ranks;         // 0: the convert command; N: a save by N rank processes
};

struct Tally {
  int trials = 0, kills = 0, ended_first = 0;
  int one_rank_kills = 0;  // of `kills`: one rank killed, the others left to fail
  int invalid = 0, neither = 0, old_gen = 0, new_gen = 0;
  int debris_after_kill = 0, max_debris_after_kill = 0;
  int max_stray_after_save = 0;
  int survivors_hung = 0, survivors_failed = 0;
  std::vector<std::string> failures;  // the first few, with the trial's details
};

class CrashRun {
 public:
  // Sources and logs go under `work`; the checkpoint folder is `dst`.
  CrashRun(Mode mode, std::vector<Generation> gens, int64_t mib, std::string work, std::string dst)
      : mode_(std::move(mode)), gens_(std::move(gens)), mib_(mib), work_(std::move(work)), dst_(std::move(dst)) {}

  // Convert mode: the sources of each generation, saved by one process.
  void SaveSources() {
    for (int g = 0; g < 2; ++g) {
      StateDict sd;
      AddGeneration(gens_[g], 1, 0, sd);
      save(sd, Source(g));
    }
  }

  // Starts writing generation `gen` into `dst`. `collective_timeout_ms` bounds the ranks'
  // collectives (a rank whose peer was killed gives up after it at the latest).
  std::vector<Child> Start(int gen, const std::string& dst, int collective_timeout_ms) {
    const std::string log = work_ + "/run" + std::to_string(runs_++);
    if (mode_.ranks == 0) {
      std::vector<std::string> argv = {Runfile("scripts/convert"), Source(gen), dst, "--planner",
                                       "planners/to_fsdp.lua", "--world-size", "2",
                                       "--overwrite", "--quiet"};
      if (mode_.format == Format::kDcp) argv.insert(argv.end(), {"--format", "dcp"});
      return {Spawn(argv, {}, log + ".log")};
    }
    const int port = FreePort();
    std::vector<Child> cs;
    for (int r = 0; r < mode_.ranks; ++r) {
      cs.push_back(Spawn({Runfile("tests/crash/crash_worker"), std::to_string(gen), std::to_string(mib_),
                          dst, FormatName(mode_.format)},
                         {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r),
                          "WORLD_SIZE=" + std::to_string(mode_.ranks), "MASTER_ADDR=127.0.0.1",
                          "MASTER_PORT=" + std::to_string(port),
                          "DCPP_CRASH_TIMEOUT_MS=" + std::to_string(collective_timeout_ms)},
                         log + ".rank" + std::to_string(r) + ".log"));
    }
    return cs;
  }

  // Writes generation `gen` into `dst` to the end; returns its wall time. Throws if it fails.
  double RunToEnd(int gen, const std::string& dst) {
    const auto t0 = Clock::now();
    std::vector<Child> cs = Start(gen, dst, 120000);
    const bool ended = WaitUntil(cs, t0 + std::chrono::seconds(300));
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    KillAndReap(cs);
    for (const Child& c : cs) {
      DCPP_CHECK(ended && c.ExitedOk(), mode_.name, ": writing generation ", gen, " into ", dst,
                 ended ? "" : " did not end within 300 s;", " ", c.Describe(), ": ", c.Output());
    }
    return secs;
  }

  // Trials until `kills` runs were killed (at most 3 x kills trials).
  Tally Trials(int kills, uint64_t seed, double* duration) {
    Tally t;
    const std::string& dst = dst_;
    // Generation 0 committed, then the duration of three whole runs, ending on 1. The fastest
    // is the least disturbed by other work on the machine; slower runs still get kills all along.
    RunToEnd(0, dst);
    const int clean = CountFiles(dst);
    *duration = std::min({RunToEnd(1, dst), RunToEnd(0, dst), RunToEnd(1, dst)});
    int cur = 1;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> when(0, 1.2 * *duration);
    for (int i = 0; t.kills < kills && i < 3 * kills; ++i) {
      const int next = 1 - cur;
      const double at_s = when(rng);
      // Ranks: all killed at once, or one chosen at random (the others then fail on their own).
      const int victim = mode_.ranks == 0 ? -1 : static_cast<int>(rng() % (mode_.ranks + 1)) - 1;
      std::string what = StrCat(mode_.name, " trial ", i, ": generation ", next, " over ", cur, ", kill ",
                                victim < 0 ? "all" : "rank " + std::to_string(victim), " at ",
                                static_cast<int>(at_s * 1000), " ms");
      const auto t0 = Clock::now();
      std::vector<Child> cs = Start(next, dst, 5000);
      const bool ended = WaitUntil(cs, t0 + std::chrono::microseconds(static_cast<int64_t>(at_s * 1e6)));
      ++t.trials;
      bool fired = false;
      for (size_t r = 0; r < cs.size(); ++r) {
        if ((victim < 0 || victim == static_cast<int>(r)) && !cs[r].done) {
          cs[r].Kill();
          fired = true;
        }
      }
      t.kills += fired ? 1 : 0;
      t.one_rank_kills += fired && victim >= 0 ? 1 : 0;
      t.ended_first += ended ? 1 : 0;
      // Survivors of a one-rank kill must fail (or finish) on their own, within their timeout.
      if (!WaitUntil(cs, Clock::now() + std::chrono::seconds(60))) {
        ++t.survivors_hung;
        Fail(t, what + ": a surviving rank still ran 60 s after the kill");
      }
      KillAndReap(cs);
      for (size_t r = 0; r < cs.size(); ++r) {
        if (!cs[r].Killed() && !cs[r].ExitedOk()) ++t.survivors_failed;
        if (!fired && !cs[r].ExitedOk()) Fail(t, what + ": unkilled run ended " + cs[r].Describe() + ": " + cs[r].Output());
      }

      const FolderState st = Inspect(dst, mode_.format, gens_);
      const int debris = CountFiles(dst) - clean;
      if (!st.valid) {
        ++t.invalid;
        Fail(t, what + ": folder invalid: " + st.problem + " [" + Listing(dst) + "]");
      } else if (st.generation < 0) {
        ++t.neither;
        Fail(t, what + ": neither generation: " + st.problem);
      } else {
        ++(st.generation == cur ? t.old_gen : t.new_gen);
      }
      if (!fired && st.generation != next) Fail(t, what + ": the run ended, yet the folder is not the new generation");
      if (debris > 0) ++t.debris_after_kill;
      t.max_debris_after_kill = std::max(t.max_debris_after_kill, debris);

      // The next successful save must clean up whatever the killed one left.
      RunToEnd(next, dst);
      const FolderState after = Inspect(dst, mode_.format, gens_);
      if (!after.valid || after.generation != next) {
        Fail(t, what + ": after the next save: " + (after.problem.empty() ? "wrong generation" : after.problem));
      }
      const int stray = CountFiles(dst) - clean;
      if (stray != 0) Fail(t, StrCat(what, ": ", stray, " stray files after the next save [", Listing(dst), "]"));
      t.max_stray_after_save = std::max(t.max_stray_after_save, stray);
      cur = next;
      if ((i + 1) % 25 == 0) {  // progress of long runs
        std::fprintf(stderr, "%s: %d trials, %d invalid, %d neither, %d old, %d new\n", mode_.name.c_str(),
                     t.trials, t.invalid, t.neither, t.old_gen, t.new_gen);
      }
    }
    return t;
  }

 private:
  std::string Source(int gen) const { return work_ + "/src" + std::to_string(gen); }
  static void Fail(Tally& t, const std::string& msg) {
    if (t.failures.size() < 5) t.failures.push_back(msg);
  }

  Mode mode_;
  std::vector<Generation> gens_;
  int64_t mib_;
  std::string work_;
  std::string dst_;
  int runs_ = 0;
};

void RunMode(Mode mode) {
  const int kills = static_cast<int>(EnvInt("DCPP_CRASH_TRIALS", 6));
  const int64_t mib = EnvInt("DCPP_CRASH_MIB", 16);
  const uint64_t seed = static_cast<uint64_t>(EnvInt("DCPP_CRASH_SEED", static_cast<int64_t>(std::random_device{}())));
  std::printf("%s: %d kills, %lld MiB, seed %llu, folder under %s\n", mode.name.c_str(), kills,
              static_cast<long long>(mib), static_cast<unsigned long long>(seed), mode.root.c_str());
  Scratch work(DiskRoot()), folder(mode.root);
  CrashRun run(mode, {MakeGeneration(0, mib), MakeGeneration(1, mib)}, mib, work.path(), folder / "ckpt");
  if (mode.ranks == 0) run.SaveSources();
  double duration = 0;
  const auto t0 = Clock::now();
  const Tally t = run.Trials(kills, seed, &duration);
  std::printf(
      "CRASH %s: trials %d, kills %d (of one rank %d; run ended first %d), invalid %d, neither %d, old %d, new %d, "
      "debris after kill in %d (max %d files), max stray files after next save %d, "
      "survivors failed %d, hung %d; run %.2f s, %d trials in %.0f s\n",
      mode.name.c_str(), t.trials, t.kills, t.one_rank_kills, t.ended_first, t.invalid, t.neither, t.old_gen, t.new_gen,
      t.debris_after_kill, t.max_debris_after_kill, t.max_stray_after_save, t.survivors_failed,
      t.survivors_hung, duration, t.trials, std::chrono::duration<double>(Clock::now() - t0).count());
  std::fflush(stdout);
  for (const std::string& f : t.failures) ADD_FAILURE() << f;
  EXPECT_EQ(t.invalid, 0);
  EXPECT_EQ(t.neither, 0);
  EXPECT_EQ(t.max_stray_after_save, 0);
  EXPECT_EQ(t.survivors_hung, 0);
  EXPECT_EQ(t.kills, kills) << "too many runs ended before their kill time";
}

std::string ShmRoot() {
  std::error_code ec;
  return fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : DiskRoot();
}

TEST(Crash, ConvertNativeOnShm) { RunMode({"convert-native-shm", ShmRoot(), Format::kNative, 0}); }
TEST(Crash, ConvertNativeOnDisk) { RunMode({"convert-native-disk", DiskRoot(), Format::kNative, 0}); }
TEST(Crash, ConvertDcpOnDisk) { RunMode({"convert-dcp-disk", DiskRoot(), Format::kDcp, 0}); }
TEST(Crash, ThreeRankSaveOnDisk) { RunMode({"save-3-ranks-disk", DiskRoot(), Format::kNative, 3}); }

}  // namespace
}  // namespace dcpp::crash
