// Read once, broadcast: replicated regions that the load planner's load_broadcast picks are
// read from storage by one rank and broadcast to the others (gloo ranks in threads).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <mutex>

#include "core/dcpp.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::Joined;
using testing::RunRanks;
using testing::TempDir;

constexpr int kWorld = 4;

// Replicated tensors of several dtypes and sizes, saved from one process (one chunk each).
struct Replicated {
  at::Tensor a = at::rand({25, 40});                      // float32, 4000 bytes
  at::Tensor b = at::rand({20, 30});                      // float32, 2400 bytes
  at::Tensor c = at::rand({2000}) > 0.5;                  // bool, 2000 bytes
  at::Tensor d = at::rand({800}).to(at::kBFloat16);       // bfloat16, 1600 bytes
  at::Tensor step = at::scalar_tensor(7, at::kLong);      // 0-d int64, 8 bytes
  static constexpr int64_t kBytes = 4000 + 2400 + 2000 + 1600 + 8;

  void Save(const std::string& dir) const {
    StateDict sd;
    sd.AddTensor("a", a);
    sd.AddTensor("b", b);
    sd.AddTensor("c", c);
    sd.AddTensor("d", d);
    sd.AddTensor("step", step);
    save(sd, dir);
  }
};

LoadOptions Options(Comm& comm, const std::string& broadcast) {
  LoadOptions lo;
  lo.comm = &comm;
  if (!broadcast.empty()) lo.planner_options["broadcast"] = broadcast;
  return lo;
}

// Each rank's targets: zeros (b as a transposed, non-contiguous view), then loaded.
LoadStats LoadReplicated(const Replicated& want, const std::string& dir, Comm& comm,
                         const std::string& broadcast, int rank) {
  at::Tensor a = at::zeros({25, 40}), b = at::zeros({30, 20}).t(), c = at::zeros({2000}, at::kBool);
  at::Tensor d = at::zeros({800}, at::kBFloat16), step = at::scalar_tensor(0, at::kLong);
  StateDict sd;
  sd.AddTensor("a", a);
  sd.AddTensor("b", b);
  sd.AddTensor("c", c);
  sd.AddTensor("d", d);
  sd.AddTensor("step", step);
  const LoadStats st = load(sd, dir, Options(comm, broadcast));
  DCPP_CHECK(at::equal(a, want.a) && at::equal(b, want.b) && at::equal(c, want.c) &&
                 at::equal(d, want.d) && at::equal(step, want.step),
             "rank ", rank, ": values differ after load (broadcast=", broadcast, ")");
  DCPP_CHECK(st.bytes_needed == Replicated::kBytes, "bytes_needed ", st.bytes_needed);
  return st;
}

TEST(BroadcastLoad, ReplicatedTensorsAreReadOnceAndBroadcastOnFourRanks) {
  TempDir dir;
  at::manual_seed(21);
  const Replicated want;
  want.Save(dir.path());
  std::vector<LoadStats> stats(kWorld);
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    stats[rank] = LoadReplicated(want, dir.path(), comm, "on", rank);
  });
  ASSERT_EQ(Joined(errors), "");
  // The default planner gives the largest region to the least-loaded rank: a (4000 bytes) to
  // rank 0, b (2400) to 1, c (2000) to 2, d (1600) to 3, then step (8) to 3. Each rank reads
  // only the regions it is the root of, and receives (or sends) all of them.
  const int64_t read[kWorld] = {4000, 2400, 2000, 1600 + 8};
  int64_t total = 0;
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(stats[r].bytes_read, read[r]) << "rank " << r;
    EXPECT_EQ(stats[r].broadcast_bytes, Replicated::kBytes) << "rank " << r;
    total += stats[r].bytes_read;
  }
  EXPECT_EQ(total, Replicated::kBytes);  // every byte read from storage exactly once
}

// "off", and the default ("auto") on a CPU (gloo) group: every rank reads everything.
class BroadcastOff : public ::testing::TestWithParam<std::string> {};

TEST_P(BroadcastOff, EveryRankReadsEverything) {
  TempDir dir;
  at::manual_seed(22);
  const Replicated want;
  want.Save(dir.path());
  std::vector<LoadStats> stats(kWorld);
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    stats[rank] = LoadReplicated(want, dir.path(), comm, GetParam(), rank);
  });
  ASSERT_EQ(Joined(errors), "");
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(stats[r].bytes_read, Replicated::kBytes) << "rank " << r;
    EXPECT_EQ(stats[r].broadcast_bytes, 0) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, BroadcastOff, ::testing::Values("off", "auto", ""));

// Sharded keys (resharded on load), replicated keys, a key replicated over half of a 2x2 mesh
// and a bytes entry: only the keys every rank wants whole are broadcast.
TEST(BroadcastLoad, MixOfShardedAndReplicatedKeys) {
  TempDir dir;
  at::manual_seed(23);
  const at::Tensor w = at::rand({8, 12}), norm = at::rand({12}), emb = at::rand({16, 4});
  const at::Tensor tp = at::rand({6, 5});
  const Layout half{{2, 2}, {Placement::Shard(0), Placement::Replicate()}};
  std::vector<LoadStats> off(kWorld), on(kWorld);
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    StateDict saved;
    saved.AddSharded("w", w, Layout::Sharded(kWorld, 0), rank);
    saved.AddTensor("norm", norm);
    saved.AddTensor("emb", emb);
    saved.AddTensor("tp", tp);
    saved.AddBytes("cfg", "config");
    SaveOptions so;
    so.comm = &comm;
    save(saved, dir.path(), so);
    for (const std::string mode : {"off", "on"}) {
      StateDict sd;
      sd.AddUnallocated("w", at::kFloat, {8, 12}, Layout::Sharded(kWorld, 1), rank);
      at::Tensor n = at::zeros({12}), e = at::zeros({16, 4});
      sd.AddTensor("norm", n);
      sd.AddTensor("emb", e);
      sd.AddUnallocated("tp", at::kFloat, {6, 5}, half, rank);
      sd.AddBytes("cfg", "");
      (mode == "on" ? on : off)[rank] = load(sd, dir.path(), Options(comm, mode));
      const LocalChunk& wc = sd.FindTensor("w")->chunks[0];
      DCPP_CHECK(at::equal(wc.tensor, w.narrow(1, wc.box.offsets[1], wc.box.sizes[1])), "w");
      const LocalChunk& tc = sd.FindTensor("tp")->chunks[0];
      DCPP_CHECK(at::equal(tc.tensor, tp.narrow(0, tc.box.offsets[0], tc.box.sizes[0])), "tp");
      DCPP_CHECK(at::equal(n, norm) && at::equal(e, emb), "rank ", rank, " ", mode, ": replicated");
      DCPP_CHECK(sd.FindBytes("cfg")->data == "config", "cfg");
    }
  });
  ASSERT_EQ(Joined(errors), "");
  // emb (256 bytes) from rank 0, norm (48) from rank 1; w and tp are read as before.
  const int64_t not_read[kWorld] = {48, 256, 304, 304};
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_EQ(off[r].broadcast_bytes, 0);
    EXPECT_EQ(on[r].broadcast_bytes, 48 + 256) << "rank " << r;
    EXPECT_EQ(off[r].bytes_read - on[r].bytes_read, not_read[r]) << "rank " << r;
    EXPECT_EQ(on[r].bytes_needed, off[r].bytes_needed);
  }
}

TEST(BroadcastLoad, UnallocatedAndMetaReplicatedTargetsAreAllocated) {
  TempDir dir;
  at::manual_seed(24);
  const at::Tensor r1 = at::rand({64, 8}), r2 = at::rand({3, 3}).to(at::kDouble);
  {
    StateDict sd;
    sd.AddTensor("r1", r1);
    sd.AddTensor("r2", r2);
    save(sd, dir.path());
  }
  std::vector<LoadStats> stats(kWorld);
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    StateDict sd;
    sd.AddUnallocated("r1", at::kFloat, {64, 8}, Layout::Replicated(kWorld), rank);
    sd.AddTensor("r2", at::empty({3, 3}, at::TensorOptions().dtype(at::kDouble).device(at::kMeta)));
    stats[rank] = load(sd, dir.path(), Options(comm, "on"));
    for (const char* key : {"r1", "r2"}) {
      const at::Tensor& t = sd.FindTensor(key)->chunks[0].tensor;
      DCPP_CHECK(t.defined() && t.is_cpu(), key, " not allocated on rank ", rank);
      DCPP_CHECK(at::equal(t, std::string(key) == "r1" ? r1 : r2), key, " differs on rank ", rank);
    }
  });
  ASSERT_EQ(Joined(errors), "");
  EXPECT_EQ(stats[0].bytes_read, 64 * 8 * 4);  // r1 from rank 0, r2 (72 bytes) from rank 1
  EXPECT_EQ(stats[1].bytes_read, 72);
  for (int r = 0; r < kWorld; ++r) {
    if (r >= 2) {
      EXPECT_EQ(stats[r].bytes_read, 0) << "rank " << r;
    }
    EXPECT_EQ(stats[r].broadcast_bytes, 64 * 8 * 4 + 72) << "rank " << r;
  }
}

// A user's planner: reads like the default, broadcasts the groups named by option `groups`.
constexpr const char* kScript = R"(local P = {}
function P.load_local(ctx, targets, md)
  local reads = {}
  for i, t in ipairs(targets) do
    for j, c in ipairs(md.tensors[t.fqn].chunks) do
      if dcpp.overlap(t.offsets, t.sizes, c.offsets, c.sizes) then
        reads[#reads + 1] = {target = i, key = t.fqn, chunk = j}
      end
    end
  end
  return reads, {}
end
function P.load_broadcast(ctx, wanted, md)
  assert(ctx.comm_device == "cpu" and #wanted == ctx.world_size)
  local mine = wanted[1][1]  -- rank 0's shard of w
  local g = ctx.options.groups
  if g == "box" then return {{fqn = "w", offsets = mine.offsets, sizes = mine.sizes, root = 0}} end
  if g == "root" then return {{fqn = "r", offsets = {0}, sizes = {10}, root = #wanted}} end
  if g == "twice" then
    return {{fqn = "r", offsets = {0}, sizes = {10}, root = 0},
            {fqn = "r", offsets = {0}, sizes = {10}, root = 1}}
  end
  if g == "root2" then return {{fqn = "r", offsets = {0}, sizes = {10}, root = 2}} end
  return {}
end
return P
)";

TEST(BroadcastLoad, PlannerMistakesRaiseOnEveryRankNamingScriptAndKey) {
  TempDir dir;
  const std::string script = dir / "bcast.lua";
  std::ofstream(script) << kScript;
  const at::Tensor w = at::arange(32, at::kFloat).reshape({8, 4}), r = at::arange(10, at::kFloat);
  {
    StateDict sd;
    sd.AddTensor("w", w);
    sd.AddTensor("r", r);
    save(sd, dir / "ckpt");
  }
  std::mutex mu;
  std::map<std::string, std::vector<std::string>> messages;  // per case, one per rank
  std::vector<LoadStats> stats(kWorld);
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    for (const std::string groups : {"box", "root", "twice", "root2"}) {
      StateDict sd;
      sd.AddUnallocated("w", at::kFloat, {8, 4}, Layout::Sharded(kWorld, 0), rank);
      at::Tensor mine = at::zeros({10});
      sd.AddTensor("r", mine);
      LoadOptions lo = Options(comm, "");
      lo.planner = script;
      lo.planner_options["groups"] = groups;
      try {
        stats[rank] = load(sd, dir / "ckpt", lo);
        DCPP_CHECK(at::equal(mine, r), "r differs on rank ", rank);
      } catch (const Error& e) {  // a dcpp::Error, on every rank
        std::lock_guard<std::mutex> lock(mu);
        messages[groups].push_back(e.what());
      }
    }
  });
  ASSERT_EQ(Joined(errors), "");
  const std::map<std::string, std::vector<std::string>> expect = {
      {"box", {"key 'w' [0:2, 0:4]", "rank 1 has no target chunk of key 'w'"}},
      {"root", {"key 'r' [0:10]", "root 4 is not a rank (0..3)"}},
      {"twice", {"group 2 (key 'r' [0:10])", "appears twice"}},
  };
  for (const auto& [name, parts] : expect) {
    ASSERT_EQ(messages[name].size(), size_t{kWorld}) << name;
    for (const std::string& m : messages[name]) {
      EXPECT_NE(m.find("planner " + script + " load_broadcast"), std::string::npos) << m;
      for (const std::string& p : parts) EXPECT_NE(m.find(p), std::string::npos) << m;
    }
  }
  // A valid group with the script's own root: only rank 2 reads r.
  EXPECT_EQ(messages.count("root2"), 0u);
  for (int rk = 0; rk < kWorld; ++rk) {
    EXPECT_EQ(stats[rk].bytes_read, 32 + (rk == 2 ? 40 : 0)) << "rank " << rk;  // w's 2 rows
    EXPECT_EQ(stats[rk].broadcast_bytes, 40) << "rank " << rk;
  }
}

}  // namespace
}  // namespace dcpp
