// The seeds across real ranks: gloo process groups, one thread per rank.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>

#include <fstream>
#include <random>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/model/module_state_dict.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::Joined;
using testing::RunRanks;
using testing::TempDir;

struct MLP : torch::nn::Module {
  MLP() {
    net1 = register_module("net1", torch::nn::Linear(10, 16));
    net2 = register_module("net2", torch::nn::Linear(16, 10));
  }
  at::Tensor forward(const at::Tensor& x) { return net2(torch::relu(net1(x))); }
  torch::nn::Linear net1{nullptr}, net2{nullptr};
};

Layout Fsdp(const std::string&) { return Layout::Sharded(2, 0); }
Layout Tp(const std::string& fqn) {
  if (fqn.find("net2.weight") != std::string::npos) return Layout::Sharded(2, 1);
  if (fqn.find("net2.bias") != std::string::npos) return Layout::Replicated(2);
  return Layout::Sharded(2, 0);
}

class TwoRankRoundTrip : public ::testing::TestWithParam<int> {};

TEST_P(TwoRankRoundTrip, ShardedTensorsDifferBeforeAndEqualAfter) {
  TempDir dir;
  at::manual_seed(11);
  const at::Tensor full = at::rand({8, 6});
  const auto errors = RunRanks(2, [&](int rank, Comm& comm) {
    StateDict sd;
    sd.AddSharded("w", full, Layout::Sharded(2, 0), rank);
    sd.AddBytes("rank_blob", "same on every rank");
    SaveOptions so;
    so.comm = &comm;
    so.thread_count = GetParam();
    save(sd, dir.path(), so);
    at::Tensor mine = at::zeros({4, 6});
    StateDict back;
    back.Add(TensorEntry{"w", at::kFloat, {8, 6}, {{BoxForRank({8, 6}, Layout::Sharded(2, 0), rank), mine}}});
    back.AddBytes("rank_blob", "");
    DCPP_CHECK(!at::equal(mine, full.narrow(0, 4 * rank, 4)), "values equal before load");
    LoadOptions lo;
    lo.comm = &comm;
    lo.thread_count = GetParam();
    load(back, dir.path(), lo);
    DCPP_CHECK(at::equal(mine, full.narrow(0, 4 * rank, 4)), "rank ", rank, ": values differ after load");
    DCPP_CHECK(back.FindBytes("rank_blob")->data == "same on every rank", "bytes entry");
  });
  EXPECT_EQ(Joined(errors), "");
  const proto::Metadata md = ParseMetadata(
      [&] { std::ifstream in(dir / ".metadata"); return std::string(std::istreambuf_iterator<char>(in), {}); }(),
      dir.path());
  EXPECT_EQ(md.world_size(), 2);
  ASSERT_EQ(md.tensors_size(), 1);
  EXPECT_EQ(md.tensors(0).chunks_size(), 2);
  EXPECT_NE(md.tensors(0).chunks(0).file(), md.tensors(0).chunks(1).file());  // each rank its file
  EXPECT_EQ(md.bytes_size(), 1);  // the replicated blob is written once
}

INSTANTIATE_TEST_SUITE_P(Threads, TwoRankRoundTrip, ::testing::Values(1, 2));

TEST(MultiRank, RowWiseToColumnWiseOverTwoRanks) {
  TempDir dir;
  at::manual_seed(12);
  const at::Tensor full = at::rand({10, 7});
  const auto errors = RunRanks(2, [&](int rank, Comm& comm) {
    StateDict rows;
    rows.AddSharded("t", full, Layout::Sharded(2, 0), rank);
    SaveOptions so;
    so.comm = &comm;
    save(rows, dir.path(), so);
    StateDict cols;
    cols.AddUnallocated("t", at::kFloat, {10, 7}, Layout::Sharded(2, 1), rank);
    LoadOptions lo;
    lo.comm = &comm;
    load(cols, dir.path(), lo);
    const LocalChunk& c = cols.FindTensor("t")->chunks[0];
    DCPP_CHECK(at::equal(c.tensor, full.narrow(1, c.box.offsets[1], c.box.sizes[1])), "rank ", rank, " differs");
  });
  EXPECT_EQ(Joined(errors), "");
}

// test_fsdp_tp_checkpoint_conversion: FSDP(2) saved, loaded into TP(2).
TEST(MultiRank, FsdpToTensorParallel) {
  TempDir dir;
  // Models are built before the ranks start: the global RNG is not for concurrent seeding.
  torch::manual_seed(0);
  MLP fsdp;  // the full model every FSDP rank starts from
  std::vector<std::shared_ptr<MLP>> tp;
  for (int r = 0; r < 2; ++r) tp.push_back(std::make_shared<MLP>());
  const auto errors = RunRanks(2, [&](int rank, Comm& comm) {
    StateDict saved;
    AddModule(saved, fsdp, "", Fsdp, rank);
    SaveOptions so;
    so.comm = &comm;
    save(saved, dir.path(), so);

    StateDict target;
    AddModule(target, *tp[rank], "", Tp, rank);
    for (const TensorEntry& e : target.tensors()) {
      const LocalChunk& c = e.chunks[0];
      at::Tensor orig = fsdp.named_parameters()[e.fqn];
      for (size_t d = 0; d < c.box.sizes.size(); ++d) orig = orig.narrow(d, c.box.offsets[d], c.box.sizes[d]);
      DCPP_CHECK(!at::equal(orig, c.tensor), e.fqn, " equal before load");
    }
    LoadOptions lo;
    lo.comm = &comm;
    load(target, dir.path(), lo);
    for (const TensorEntry& e : target.tensors()) {
      const LocalChunk& c = e.chunks[0];
      at::Tensor orig = fsdp.named_parameters()[e.fqn];
      for (size_t d = 0; d < c.box.sizes.size(); ++d) orig = orig.narrow(d, c.box.offsets[d], c.box.sizes[d]);
      DCPP_CHECK(at::equal(orig, c.tensor), e.fqn, " differs after load on rank ", rank);
    }
  });
  EXPECT_EQ(Joined(errors), "");
}

// test_fsdp_optim_state: model + Adam state saved sharded like the parameters (step
// replicated), loaded into a fresh model and optimizer, compared state by state.
void AddAdamState(StateDict& sd, torch::optim::Adam& opt, MLP& model, int rank) {
  for (const auto& p : model.named_parameters()) {
    auto& state = static_cast<torch::optim::AdamParamState&>(*opt.state().at(p.value().unsafeGetTensorImpl()));
    sd.AddSharded("optim.state." + p.key() + ".exp_avg", state.exp_avg(), Fsdp(p.key()), rank);
    sd.AddSharded("optim.state." + p.key() + ".exp_avg_sq", state.exp_avg_sq(), Fsdp(p.key()), rank);
  }
}

TEST(MultiRank, AdamOptimizerState) {
  TempDir dir;
  // Every rank's model, optimizer and input are built up front (the global RNG is not for
  // concurrent seeding); each rank then steps its own copy identically, as data-parallel
  // ranks would after an all-reduce.
  struct Rank {
    std::shared_ptr<MLP> model, fresh;
    std::unique_ptr<torch::optim::Adam> adam, adam2;
  };
  std::vector<Rank> ranks(2);
  torch::manual_seed(1);
  const at::Tensor input = torch::rand({20, 10});
  for (Rank& r : ranks) {
    torch::manual_seed(0);
    r.model = std::make_shared<MLP>();
    r.adam = std::make_unique<torch::optim::Adam>(r.model->parameters(), torch::optim::AdamOptions(0.1));
    torch::manual_seed(7);
    r.fresh = std::make_shared<MLP>();
    r.adam2 = std::make_unique<torch::optim::Adam>(r.fresh->parameters(), torch::optim::AdamOptions(0.1));
  }
  const auto errors = RunRanks(2, [&](int rank, Comm& comm) {
    MLP& model = *ranks[rank].model;
    torch::optim::Adam& adam = *ranks[rank].adam;
    model.forward(input).sum().backward();
    adam.step();
    StateDict saved;
    AddModule(saved, model, "model.", Fsdp, rank);
    AddAdamState(saved, adam, model, rank);
    const int64_t step = static_cast<torch::optim::AdamParamState&>(
        *adam.state().begin()->second).step();
    saved.AddTensor("optim.step", at::scalar_tensor(step, at::kLong));  // replicated
    SaveOptions so;
    so.comm = &comm;
    save(saved, dir.path(), so);

    // A fresh model and optimizer whose state exists but holds other values.
    MLP& fresh = *ranks[rank].fresh;
    torch::optim::Adam& adam2 = *ranks[rank].adam2;
    for (const auto& p : fresh.parameters()) {
      auto st = std::make_unique<torch::optim::AdamParamState>();
      st->exp_avg(torch::full_like(p, 9));
      st->exp_avg_sq(torch::full_like(p, 9));
      adam2.state()[p.unsafeGetTensorImpl()] = std::move(st);
    }
    // Model first, then the optimizer state against it, as the seed does.
    StateDict model_sd;
    AddModule(model_sd, fresh, "model.", Fsdp, rank);
    LoadOptions lo;
    lo.comm = &comm;
    load(model_sd, dir.path(), lo);
    StateDict optim_sd;
    AddAdamState(optim_sd, adam2, fresh, rank);
    at::Tensor step2 = at::scalar_tensor(0, at::kLong);
    optim_sd.AddTensor("optim.step", step2);
    load(optim_sd, dir.path(), lo);
    DCPP_CHECK(step2.item<int64_t>() == step, "step ", step2.item<int64_t>(), " != ", step);
    for (const auto& p : model.named_parameters()) {
      const Box box = BoxForRank(p.value().sizes().vec(), Fsdp(p.key()), rank);
      auto shard = [&](const at::Tensor& t) { return t.narrow(0, box.offsets[0], box.sizes[0]); };
      DCPP_CHECK(at::equal(shard(p.value()), shard(fresh.named_parameters()[p.key()])), p.key());
      auto& a = static_cast<torch::optim::AdamParamState&>(*adam.state().at(p.value().unsafeGetTensorImpl()));
      auto& b = static_cast<torch::optim::AdamParamState&>(
          *adam2.state().at(fresh.named_parameters()[p.key()].unsafeGetTensorImpl()));
      DCPP_CHECK(at::equal(shard(a.exp_avg()), shard(b.exp_avg())), p.key(), ".exp_avg");
      DCPP_CHECK(at::equal(shard(a.exp_avg_sq()), shard(b.exp_avg_sq())), p.key(), ".exp_avg_sq");
      DCPP_CHECK(!at::equal(shard(b.exp_avg()), at::full_like(shard(b.exp_avg()), 9)), "unchanged");
    }
  });
  EXPECT_EQ(Joined(errors), "");
}

// test_tp_checkpoint: uneven TP shards (5 -> 10 -> 15 -> 1) loaded into unallocated targets.
TEST(MultiRank, UnevenTensorParallelIntoUnallocatedTargets) {
  TempDir dir;
  constexpr int kWorld = 3;
  torch::manual_seed(5);
  const std::vector<std::pair<std::string, at::Tensor>> params = {
      {"model.net1.weight", torch::rand({10, 5})}, {"model.net1.bias", torch::rand({10})},
      {"model.net2.weight", torch::rand({15, 10})}, {"model.net2.bias", torch::rand({15})},
      {"model.net3.weight", torch::rand({1, 15})}, {"model.net3.bias", torch::rand({1})}};
  auto layout = [](const std::string& fqn) {  // net1, net3 column-wise; net2 row-wise
    if (fqn == "model.net2.weight") return Layout::Sharded(kWorld, 1);
    if (fqn == "model.net2.bias") return Layout::Replicated(kWorld);
    return Layout::Sharded(kWorld, 0);
  };
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    StateDict sd;
    for (const auto& [fqn, t] : params) sd.AddSharded(fqn, t, layout(fqn), rank);
    SaveOptions so;
    so.comm = &comm;
    save(sd, dir.path(), so);
    StateDict target;
    for (const auto& [fqn, t] : params) target.AddUnallocated(fqn, at::kFloat, t.sizes().vec(), layout(fqn), rank);
    LoadOptions lo;
    lo.comm = &comm;
    load(target, dir.path(), lo);
    for (const auto& [fqn, t] : params) {
      const LocalChunk& c = target.FindTensor(fqn)->chunks[0];
      DCPP_CHECK(c.tensor.defined() && !c.tensor.is_meta(), fqn, " not allocated");
      at::Tensor want = t;
      for (size_t d = 0; d < c.box.sizes.size(); ++d) want = want.narrow(d, c.box.offsets[d], c.box.sizes[d]);
      DCPP_CHECK(at::equal(c.tensor, want), fqn, " differs on rank ", rank);
    }
  });
  EXPECT_EQ(Joined(errors), "");
}

// Save-plan caching (core/engine/plan_cache.h) across 3 gloo ranks: unchanged plans send
// hashes and reuse the global plan; a change on one rank plans again on every rank; a
// coordinator without the cache asks for the full plans. Every checkpoint loads back exactly.
TEST(MultiRank, PlanCachingReusesUnchangedPlansAndFallsBackOnAnyChange) {
  TempDir base;
  at::manual_seed(5);
  const at::Tensor full = at::rand({6, 4});
  const at::Tensor extra = at::rand({3});
  struct Step {
    bool extra_on_rank1;   // rank 1 alone holds one more key
    int blob_len_rank2;    // the size of rank 2's own blob
    bool coordinator_caching;
  };
  const std::vector<Step> steps = {{false, 4, true}, {false, 4, true}, {true, 4, true},
                                   {true, 4, true},  {true, 9, true},  {true, 9, false}};
  std::vector<std::vector<SaveStats>> stats(steps.size(), std::vector<SaveStats>(3));
  const auto errors = RunRanks(3, [&](int rank, Comm& comm) {
    for (size_t i = 0; i < steps.size(); ++i) {
      const Step& st = steps[i];
      const std::string dir = base / ("s" + std::to_string(i));
      StateDict sd;
      sd.AddSharded("w", full * static_cast<float>(i + 1), Layout::Sharded(3, 0), rank);
      sd.AddBytes("own." + std::to_string(rank), std::string(rank == 2 ? st.blob_len_rank2 : 4, 'a' + rank));
      if (st.extra_on_rank1 && rank == 1) sd.AddTensor("only_r1", extra);
      SaveOptions so;
      so.comm = &comm;
      so.plan_caching = rank == 0 ? st.coordinator_caching : true;
      stats[i][rank] = save(sd, dir, so);

      at::Tensor mine = at::zeros({2, 4});
      StateDict back;
      back.Add(TensorEntry{"w", at::kFloat, {6, 4}, {{BoxForRank({6, 4}, Layout::Sharded(3, 0), rank), mine}}});
      back.AddBytes("own." + std::to_string(rank), "");
      at::Tensor got_extra = at::zeros({3});
      if (st.extra_on_rank1) back.AddTensor("only_r1", got_extra);
      LoadOptions lo;
      lo.comm = &comm;
      load(back, dir, lo);
      DCPP_CHECK(at::equal(mine, (full * static_cast<float>(i + 1)).narrow(0, 2 * rank, 2)), "step ", i,
                 " rank ", rank, ": w differs");
      DCPP_CHECK(back.FindBytes("own." + std::to_string(rank))->data ==
                     std::string(rank == 2 ? st.blob_len_rank2 : 4, 'a' + rank),
                 "step ", i, " rank ", rank, ": blob differs");
      DCPP_CHECK(!st.extra_on_rank1 || at::equal(got_extra, extra), "step ", i, " rank ", rank, ": only_r1");
    }
  });
  ASSERT_EQ(Joined(errors), "");
  const std::vector<bool> cached = {false, true, false, true, false, false};
  for (size_t i = 0; i < steps.size(); ++i) {
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(stats[i][r].plan_cached, cached[i]) << "step " << i << " rank " << r;
    }
  }
  // Step 1: every rank sent a hash (1 + 16 bytes), the coordinator gathered 3 of them.
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(stats[1][r].local_plan_cached) << r;
    EXPECT_EQ(stats[1][r].plan_bytes_sent, 17) << r;
  }
  EXPECT_EQ(stats[1][0].plan_bytes_gathered, 3 * 17);
  EXPECT_GT(stats[0][0].plan_bytes_gathered, 3 * (17 + 20));
  // Step 2: rank 1 alone changed: it sent its plan, the others hashes; no second round.
  EXPECT_TRUE(stats[2][0].local_plan_cached);
  EXPECT_FALSE(stats[2][1].local_plan_cached);
  EXPECT_TRUE(stats[2][2].local_plan_cached);
  EXPECT_EQ(stats[2][0].plan_bytes_gathered, 2 * 17 + stats[2][1].plan_bytes_sent);
  // Step 4: rank 2's blob grew: rank 2 planned again.
  EXPECT_FALSE(stats[4][2].local_plan_cached);
  EXPECT_TRUE(stats[4][1].local_plan_cached);
  // Step 5: the coordinator does not cache, so the hashes of ranks 1 and 2 cannot be resolved:
  // a second round of full plans.
  EXPECT_TRUE(stats[5][1].local_plan_cached);
  EXPECT_GT(stats[5][1].plan_bytes_sent, 17 + 17 + 20);
  EXPECT_EQ(stats[5][0].plan_bytes_gathered,
            stats[5][0].plan_bytes_sent + stats[5][1].plan_bytes_sent + stats[5][2].plan_bytes_sent);
  // The cached save wrote what the first did: the same metadata, byte for byte (new folders).
  const auto read = [&](const std::string& dir) {
    std::ifstream in(dir + "/.metadata", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const proto::Metadata m0 = ParseMetadata(read(base / "s0"), "s0");
  const proto::Metadata m1 = ParseMetadata(read(base / "s1"), "s1");
  ASSERT_EQ(m0.tensors_size(), m1.tensors_size());
  EXPECT_EQ(m0.tensors(0).chunks_size(), 3);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(m0.tensors(0).chunks(c).file(), m1.tensors(0).chunks(c).file());
    EXPECT_EQ(m0.tensors(0).chunks(c).offset(), m1.tensors(0).chunks(c).offset());
  }
}

}  // namespace
}  // namespace dcpp
