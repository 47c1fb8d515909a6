#include "core/model/module_state_dict.h"

#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/module.h>

#include "core/dcpp.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

// The seeds' MLPModule: net1 = Linear(10, 16), ReLU, net2 = Linear(16, 10).
struct MLP : torch::nn::Module {
  MLP() {
    net1 = register_module("net1", torch::nn::Linear(10, 16));
    net2 = register_module("net2", torch::nn::Linear(16, 10));
  }
  torch::nn::Linear net1{nullptr}, net2{nullptr};
};

TEST(ModuleStateDict, ParametersAreViewsAndLoadInPlace) {
  testing::TempDir dir;
  MLP a, b;
  StateDict sa, sb;
  AddModule(sa, a, "model.");
  AddModule(sb, b, "model.");
  ASSERT_EQ(sa.tensors().size(), 4u);
  ASSERT_NE(sa.FindTensor("model.net2.bias"), nullptr);
  save(sa, dir.path());
  ASSERT_FALSE(torch::equal(a.net1->weight, b.net1->weight));
  load(sb, dir.path());
  EXPECT_TRUE(torch::equal(a.net1->weight, b.net1->weight));
  EXPECT_TRUE(torch::equal(a.net2->bias, b.net2->bias));
}

TEST(ModuleStateDict, FsdpShardsToTensorParallel) {
  testing::TempDir dir;
  MLP fsdp, tp;
  StateDict saved;
  AddModuleAllRanks(saved, fsdp, "", [](const std::string&) { return Layout::Sharded(2, 0); });
  EXPECT_EQ(saved.FindTensor("net1.weight")->chunks.size(), 2u);
  save(saved, dir.path());
  // TP: net1 column-wise (Shard(0)), net2 row-wise (weight Shard(1), bias replicated).
  const LayoutFn tp_layout = [](const std::string& fqn) {
    if (fqn == "net2.weight") return Layout::Sharded(2, 1);
    if (fqn == "net2.bias") return Layout::Replicated(2);
    return Layout::Sharded(2, 0);
  };
  for (int rank = 0; rank < 2; ++rank) {
    StateDict target;
    AddModule(target, tp, "", tp_layout, rank);
    load(target, dir.path());
  }
  EXPECT_TRUE(torch::equal(fsdp.net1->weight, tp.net1->weight));
  EXPECT_TRUE(torch::equal(fsdp.net2->weight, tp.net2->weight));
  EXPECT_TRUE(torch::equal(fsdp.net2->bias, tp.net2->bias));
}

}  // namespace
}  // namespace dcpp
