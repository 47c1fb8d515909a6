#include "core/model/state_dict.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/base/error.h"

namespace dcpp {
namespace {

TEST(StateDict, FlattenAndUnflattenNestedDictsAndLists) {
  Nested root;
  Nested model;
  model.Set("net1", Nested().Set("weight", Nested::Tensor(at::ones({2, 2}))));
  Nested groups = Nested::List();
  groups.Append(Nested().Set("lr", Nested::Bytes("0.25")));
  groups.Append(Nested().Set("lr", Nested::Bytes("0.5")));
  root.Set("model", std::move(model));
  root.Set("optim", Nested().Set("param_groups", std::move(groups)));

  const StateDict sd = Flatten(root);
  ASSERT_NE(sd.FindTensor("model.net1.weight"), nullptr);
  ASSERT_NE(sd.FindBytes("optim.param_groups.1.lr"), nullptr);
  EXPECT_EQ(sd.FindBytes("optim.param_groups.1.lr")->data, "0.5");

  const Nested back = Unflatten(sd);
  const Nested* pg = back.Get("optim")->Get("param_groups");
  ASSERT_NE(pg, nullptr);
  ASSERT_EQ(pg->kind, Nested::Kind::kList);
  ASSERT_EQ(pg->list.size(), 2u);
  EXPECT_EQ(pg->list[0].Get("lr")->bytes, "0.25");
  EXPECT_TRUE(at::equal(back.Get("model")->Get("net1")->Get("weight")->tensor, at::ones({2, 2})));
}

TEST(StateDict, RejectsDuplicatesAndMismatchedChunks) {
  StateDict sd;
  sd.AddTensor("a", at::zeros({2}));
  EXPECT_THROW(sd.AddTensor("a", at::zeros({2})), Error);
  EXPECT_THROW(sd.AddBytes("a", "x"), Error);
  TensorEntry e{"b", at::kFloat, {4}, {{Box{{2}, {4}}, at::zeros({4})}}};
  EXPECT_THROW(sd.Add(e), Error);  // chunk outside the shape
  TensorEntry f{"c", at::kFloat, {4}, {{Box{{0}, {4}}, at::zeros({3})}}};
  EXPECT_THROW(sd.Add(f), Error);  // tensor does not match the box
  Nested bad;
  bad.Set("x.y", Nested::Bytes(""));
  EXPECT_THROW(Flatten(bad), Error);  // '.' is the FQN separator
}

TEST(StateDict, AnyStringIsAKeyTheEmptyOneToo) {
  // PyTorch saves {"": t}; keys with spaces, unicode and runs of dots are FQNs as well.
  StateDict sd;
  for (const char* key : {"", " ", "a b", "\xc3\xbcn\xc3\xaf.c\xc3\xb6" "de", "a..b.", "\t"}) {
    sd.AddTensor(key, at::ones({2}));
    ASSERT_NE(sd.FindTensor(key), nullptr) << "'" << key << "'";
  }
  EXPECT_THROW(sd.AddTensor("", at::ones({2})), Error);  // still a duplicate
  StateDict blob;
  blob.AddBytes("", "x");
  EXPECT_EQ(blob.FindBytes("")->data, "x");

  // Nested dicts with "" keys flatten as PyTorch joins their paths: {"": t} is "",
  // {"": {"a": t}} is ".a", {"m": {"": t}} is "m.".
  Nested root;
  root.Set("", Nested::Tensor(at::full({1}, 1.0)));
  root.Set("m", Nested().Set("", Nested::Tensor(at::full({1}, 2.0))));
  const StateDict flat = Flatten(root);
  ASSERT_NE(flat.FindTensor(""), nullptr);
  ASSERT_NE(flat.FindTensor("m."), nullptr);
  EXPECT_EQ(flat.FindTensor("m.")->chunks[0].tensor.item<float>(), 2.0f);
  Nested inner;
  inner.Set("", Nested().Set("a", Nested::Tensor(at::full({1}, 3.0))));
  EXPECT_NE(Flatten(inner).FindTensor(".a"), nullptr);
  const Nested back = Unflatten(flat);
  EXPECT_EQ(back.Get("")->tensor.item<float>(), 1.0f);
  EXPECT_EQ(back.Get("m")->Get("")->tensor.item<float>(), 2.0f);
}

TEST(StateDict, ShardedViewsShareTheCallersStorage) {
  const at::Tensor full = at::arange(20, at::kFloat).reshape({4, 5});
  StateDict sd;
  sd.AddSharded("w", full, Layout::Sharded(2, 1), 1);
  const LocalChunk& c = sd.FindTensor("w")->chunks[0];
  EXPECT_EQ(c.box, (Box{{0, 3}, {4, 2}}));
  c.tensor.fill_(-1);
  EXPECT_EQ(full[0][3].item<float>(), -1);
  EXPECT_EQ(full[0][2].item<float>(), 2);
}

}  // namespace
}  // namespace dcpp
