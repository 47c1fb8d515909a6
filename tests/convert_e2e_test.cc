// The headline story end to end: an FSDP checkpoint saved by 4 gloo ranks, converted to TP
// over 2 ranks by the real `convert` command with planners/fsdp_to_tp.lua, loaded by 2 gloo
// ranks into their TP shards; then TP 2 -> FSDP 3 with planners/to_fsdp.lua, loaded by 3.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/dcpp.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::Joined;
using testing::RunRanks;
using testing::TempDir;

struct Param {
  std::string key;
  at::Tensor value;
  Layout tp;  // the layout planners/fsdp_to_tp.lua should give it over 2 ranks
};

// A small transformer block with torchtitan names, its optimizer state, and a scalar step.
std::vector<Param> Model() {
  at::manual_seed(5);
  const Layout col = Layout::Sharded(2, 0), row = Layout::Sharded(2, 1), rep = Layout::Replicated(2);
  return {
      {"tok_embeddings.weight", at::rand({32, 8}), rep},
      {"layers.0.attention.wq.weight", at::rand({8, 8}), col},
      {"layers.0.attention.wo.weight", at::rand({8, 8}), row},
      {"layers.0.feed_forward.w1.weight", at::rand({12, 8}).to(at::kBFloat16), col},
      {"layers.0.feed_forward.w2.weight", at::rand({8, 12}).to(at::kBFloat16), row},
      {"layers.0.feed_forward.w2.bias", at::rand({8}), rep},
      {"net1.bias", at::rand({16}), col},
      {"norm.weight", at::rand({8}), rep},
      {"optim.state.layers.0.attention.wo.weight.exp_avg", at::rand({8, 8}), row},
      {"optim.state.layers.0.attention.wo.weight.step", at::scalar_tensor(3.0), rep},
  };
}

std::string Runfile(const std::string& path) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/" + std::getenv("TEST_WORKSPACE") + "/" + path;
}

int Convert(const std::string& args) {
  return std::system((Runfile("scripts/convert") + " " + args + " --quiet").c_str());
}

// Each of `world` gloo ranks loads its box of every key under `layout_of` and checks it.
void LoadAndCheck(const std::string& dir, int world, const std::vector<Param>& model,
                  const std::function<Layout(const Param&)>& layout_of) {
  const auto errors = RunRanks(world, [&](int rank, Comm& comm) {
    StateDict sd;
    for (const Param& p : model) {
      sd.AddUnallocated(p.key, p.value.scalar_type(), p.value.sizes().vec(), layout_of(p), rank);
    }
    sd.AddBytes("optim.param_groups", "");
    LoadOptions lo;
    lo.comm = &comm;
    load(sd, dir, lo);
    for (const Param& p : model) {
      const LocalChunk& c = sd.FindTensor(p.key)->chunks.at(0);
      at::Tensor want = p.value;
      for (size_t d = 0; d < c.box.sizes.size(); ++d) {
        want = want.narrow(static_cast<int64_t>(d), c.box.offsets[d], c.box.sizes[d]);
      }
      DCPP_CHECK(at::equal(c.tensor, want), "rank ", rank, ": ", p.key, " ", c.box.ToString(),
                 " differs from the original");
    }
    DCPP_CHECK(sd.FindBytes("optim.param_groups")->data == "lr=3e-4", "rank ", rank, ": bytes entry");
  });
  EXPECT_EQ(Joined(errors), "");
}

TEST(ConvertEndToEnd, FsdpFourRanksToTpTwoAndBackToFsdpThree) {
  TempDir dir;
  const std::vector<Param> model = Model();
  const auto errors = RunRanks(4, [&](int rank, Comm& comm) {
    StateDict sd;
    for (const Param& p : model) {
      sd.AddSharded(p.key, p.value, p.value.dim() == 0 ? Layout::Replicated(4) : Layout::Sharded(4, 0), rank);
    }
    sd.AddBytes("optim.param_groups", "lr=3e-4");
    SaveOptions so;
    so.comm = &comm;
    save(sd, dir / "fsdp", so);
  });
  ASSERT_EQ(Joined(errors), "");

  ASSERT_EQ(Convert(dir / "fsdp " + dir / "tp --planner planners/fsdp_to_tp.lua --world-size 2"), 0);
  LoadAndCheck(dir / "tp", 2, model, [](const Param& p) { return p.tp; });

  ASSERT_EQ(Convert(dir / "tp " + dir / "fsdp3 --planner planners/to_fsdp.lua --world-size 3"), 0);
  LoadAndCheck(dir / "fsdp3", 3, model, [](const Param& p) {
    return p.value.dim() == 0 ? Layout::Replicated(3) : Layout::Sharded(3, 0);
  });
}

}  // namespace
}  // namespace dcpp
