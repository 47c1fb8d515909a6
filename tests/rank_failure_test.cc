// The commit protocol across ranks (docs/format.md, "Commit protocol"): one rank dies at each
// collective of a save — planning, writing, after sending its write results, while the
// coordinator commits, after the commit — on real gloo ranks (one thread each). Whatever the
// moment, the folder then holds a loadable checkpoint (the old one until the coordinator's
// rename, the new one after it), no rank deletes a file the committed metadata names, and the
// surviving ranks' errors say which step failed and whether the commit happened.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>

#include "core/dcpp.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::RunRanks;
using testing::TempDir;

constexpr int64_t kRows = 12, kCols = 5;
at::Tensor Full(int g) { return at::arange(kRows * kCols, at::kFloat).reshape({kRows, kCols}) + 100 * g; }

// A rank of `world` holding its row shard of generation g, plus a replicated vector.
StateDict Shard(int g, int rank, int world) {
  StateDict sd;
  sd.AddSharded("w", Full(g), Layout::Sharded(world, 0), rank);
  sd.AddTensor("v", at::full({3}, g, at::kLong));
  return sd;
}

// Which generation the folder holds (loaded whole, in this process), or -1.
int GenerationIn(const std::string& dir) {
  try {
    const at::Tensor w = at::zeros({kRows, kCols}), v = at::zeros({3}, at::kLong);
    StateDict back;
    back.AddTensor("w", w);
    back.AddTensor("v", v);
    load(back, dir);
    for (int g : {1, 2}) {
      if (at::equal(w, Full(g)) && at::equal(v, at::full({3}, g, at::kLong))) return g;
    }
  } catch (const std::exception&) {
  }
  return -1;
}

// A Comm whose rank dies at its collective number `die_at` (counted from 0): that call and
// every later one throw, as the calls of a dead process never return.
class DyingComm final : public Comm {
 public:
  DyingComm(Comm& inner, int die_at) : inner_(inner), die_at_(die_at) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::vector<std::string> Gather(const std::string& mine, int root) override {
    Step();
    return inner_.Gather(mine, root);
  }
  std::string Scatter(const std::vector<std::string>& parts, int root) override {
    Step();
    return inner_.Scatter(parts, root);
  }
  std::string Broadcast(const std::string& data, int root) override {
    Step();
    return inner_.Broadcast(data, root);
  }
  std::string AllReduceError(const std::string& error) override {
    Step();
    return inner_.AllReduceError(error);
  }
  void BroadcastTensor(at::Tensor& t, int root) override {
    Step();
    inner_.BroadcastTensor(t, root);
  }
  int calls() const { return calls_; }
  bool dead() const { return dead_; }

 private:
  void Step() {
    if (calls_++ == die_at_ || dead_) {
      dead_ = true;
      throw Error("simulated death of this rank");
    }
  }
  Comm& inner_;
  int die_at_;
  int calls_ = 0;
  bool dead_ = false;
};

// A dead process cleans nothing up: once its rank has died, Abort does nothing.
class DeadRankWriter final : public StorageWriter {
 public:
  DeadRankWriter(const std::string& dir, const DyingComm& comm) : inner_(dir), comm_(comm) {}
  void Begin(bool wait) override { inner_.Begin(wait); }
  void End() override { inner_.End(); }
  int FirstFreeFileIndex() override { return inner_.FirstFreeFileIndex(); }
  bool HasCommitted() override { return inner_.HasCommitted(); }
  std::vector<std::string> CommittedFiles() override { return inner_.CommittedFiles(); }
  std::unique_ptr<FileSink> Open(const std::string& name) override { return inner_.Open(name); }
  CommitReport Commit(const std::string& md, const std::vector<std::string>& keep) override {
    return inner_.Commit(md, keep);
  }
  void Abort(const std::vector<std::string>& created) override {
    if (!comm_.dead()) inner_.Abort(created);
  }
  std::string Describe() const override { return inner_.Describe(); }

 private:
  FileSystemWriter inner_;
  const DyingComm& comm_;
};

// Saves generation 2 over generation 1 on `world` ranks, rank `victim` dying at its
// collective `die_at` (-1: nobody dies). Returns each rank's error and the collectives count.
std::vector<std::string> SaveWithDeath(const std::string& dir, int world, int victim, int die_at, int* calls) {
  return RunRanks(
      world,
      [&](int rank, Comm& comm) {
        DyingComm dying(comm, rank == victim ? die_at : -1);
        DeadRankWriter writer(dir, dying);
        SaveOptions so;
        so.comm = &dying;
        struct Count {
          DyingComm& c;
          int* out;
          int rank;
          ~Count() {
            if (rank == 0 && out != nullptr) *out = c.calls();
          }
        } count{dying, calls, rank};
        save(Shard(2, rank, world), writer, so);
      },
      std::chrono::seconds(5));
}

class RankFailure : public ::testing::TestWithParam<int> {};

TEST_P(RankFailure, ARankDyingAtEachCollectiveLeavesALoadableCheckpoint) {
  const int world = GetParam();
  TempDir tmp;
  const std::string dir = tmp / "ckpt";
  auto fresh = [&] {
    std::filesystem::remove_all(dir);
    const auto errors = RunRanks(world, [&](int rank, Comm& comm) {
      SaveOptions so;
      so.comm = &comm;
      save(Shard(1, rank, world), dir, so);
    });
    for (const auto& e : errors) ASSERT_EQ(e, "");
    ASSERT_EQ(GenerationIn(dir), 1);
  };
  fresh();
  int total = 0;
  for (const auto& e : SaveWithDeath(dir, world, -1, -1, &total)) ASSERT_EQ(e, "");
  ASSERT_EQ(GenerationIn(dir), 2);
  ASSERT_GE(total, 8);  // prepare x2, local plan x2, global plan x2, write, results, outcome
  const int outcome_call = total - 1;  // the coordinator's word on the commit

  for (int victim = 0; victim < world; ++victim) {
    for (int k = 0; k < total; ++k) {
      fresh();
      const auto errors = SaveWithDeath(dir, world, victim, k, nullptr);
      const std::string at = "rank " + std::to_string(victim) + " dies at collective " + std::to_string(k) +
                             " of " + std::to_string(total) + "; errors:\n" + testing::Joined(errors);
      const int g = GenerationIn(dir);
      ASSERT_NE(g, -1) << "no loadable checkpoint after " << at;
      // The commit happens exactly when the coordinator got every rank's results: a death
      // before the last collective prevents it, a non-coordinator's death at the last one
      // does not.
      const bool committed = k == outcome_call;
      EXPECT_EQ(g, committed ? 2 : 1) << at;
      for (int r = 0; r < world; ++r) {
        if (r == victim) continue;
        const std::string& e = errors[r];
        ASSERT_FALSE(e.empty()) << "a survivor did not notice: " << at;
        EXPECT_NE(e.find("save: "), std::string::npos) << "names no step: " << at;
        if (k == outcome_call && victim == 0) {
          EXPECT_NE(e.find("commit state unknown"), std::string::npos) << at;
          EXPECT_NE(e.find("both valid"), std::string::npos) << at;
        }
        if (k == outcome_call && victim != 0 && r == 0) {
          EXPECT_NE(e.find("is committed"), std::string::npos) << at;
        }
        if (k < outcome_call - 1) {
          EXPECT_NE(e.find("nothing was committed"), std::string::npos) << at;
        }
      }
      // The next save removes whatever the failed one left.
      save(Shard(2, 0, 1), dir);
      std::vector<std::string> names = Env::Default()->List(dir);
      std::sort(names.begin(), names.end());
      std::string listed;
      for (const auto& n : names) listed += n + " ";
      EXPECT_EQ(names.size(), 2u) << "debris after " << at << ": " << listed;  // .metadata, one data file
    }
  }
}

INSTANTIATE_TEST_SUITE_P(World, RankFailure, ::testing::Values(2, 3));

}  // namespace
}  // namespace dcpp
