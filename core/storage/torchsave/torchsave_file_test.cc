// ReadTorchSaveFile and GatherTensor on files built by hand: dicts, OrderedDicts, nesting,
// views of one storage, and the refusals (globals, legacy format, truncation, non-tensors).
#include "core/storage/torchsave/torchsave_file.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/storage/torchsave/torchsave_test_util.h"
#include "core/testing/errors.h"

namespace dcpp {
namespace torchsave {
namespace {

using namespace torchsave_testing;  // NOLINT
using testing::ErrorOf;
using torch_archive::MemorySource;

std::vector<float> AsFloats(const std::string& bytes) {
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

TEST(TorchSaveFile, ReadsNestedDictsOfTensors) {
  // {"model": OrderedDict(w=[2, 3]), "step": int64 scalar}
  auto od = Call("collections", "OrderedDict", {});
  od->dict.emplace_back(Value::Str("w"), Tensor("0", "FloatStorage", 6, 0, {2, 3}, {3, 1}));
  const ValuePtr root = Dict({{"model", od}, {"step", Tensor("1", "LongStorage", 1, 0, {}, {})}});
  const std::string file = Archive(*root, {{"0", Floats(6, 1)}, {"1", std::string("\x07\0\0\0\0\0\0\0", 8)}},
                                   "pytorch_model");
  MemorySource src(file);
  const std::vector<SavedTensor> ts = ReadTorchSaveFile(src, "/x/pytorch_model.bin").tensors;
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts[0].fqn, "model.w");
  EXPECT_EQ(ts[0].dtype, "float32");
  EXPECT_EQ(ts[0].sizes, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(ts[0].contiguous());
  EXPECT_EQ(AsFloats(GatherTensor(src, ts[0], "f")), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(ts[1].fqn, "step");
  EXPECT_EQ(ts[1].dtype, "int64");
  EXPECT_EQ(ts[1].nbytes(), 8u);
  EXPECT_EQ(GatherTensor(src, ts[1], "f")[0], 7);
}

TEST(TorchSaveFile, ViewsOfOneStorage) {
  // One storage of 12 floats (0..11) seen as: the whole [3, 4], its transpose, rows 1..2,
  // every other element of row 0, and an empty slice.
  const ValuePtr root = Dict({
      {"whole", Tensor("s", "FloatStorage", 12, 0, {3, 4}, {4, 1})},
      {"t", Tensor("s", "FloatStorage", 12, 0, {4, 3}, {1, 4})},
      {"rows", Tensor("s", "FloatStorage", 12, 4, {2, 4}, {4, 1})},
      {"strided", Tensor("s", "FloatStorage", 12, 1, {2}, {2})},
      {"empty", Tensor("s", "FloatStorage", 12, 12, {0, 4}, {4, 1})},
  });
  const std::string file = Archive(*root, {{"s", Floats(12, 0)}});
  MemorySource src(file);
  const std::vector<SavedTensor> ts = ReadTorchSaveFile(src, "f.pt").tensors;
  ASSERT_EQ(ts.size(), 5u);
  EXPECT_TRUE(ts[0].contiguous());
  EXPECT_FALSE(ts[1].contiguous());
  EXPECT_TRUE(ts[2].contiguous());
  EXPECT_EQ(ts[2].data_offset(), ts[0].data_offset() + 16);
  EXPECT_FALSE(ts[3].contiguous());
  EXPECT_EQ(AsFloats(GatherTensor(src, ts[1], "f")), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(AsFloats(GatherTensor(src, ts[2], "f")), (std::vector<float>{4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(AsFloats(GatherTensor(src, ts[3], "f")), (std::vector<float>{1, 3}));
  EXPECT_EQ(GatherTensor(src, ts[4], "f"), "");
}

TEST(TorchSaveFile, RefusesGlobalsOutsideTheAllowList) {
  const ValuePtr root = Dict({{"w", Call("os", "system", {Value::Str("echo pwned")})}});
  const std::string file = Archive(*root, {});
  MemorySource src(file);
  const std::string err = ErrorOf([&] { ReadTorchSaveFile(src, "/m/evil.bin"); });
  EXPECT_HAS(err, "os.system");
  EXPECT_HAS(err, "/m/evil.bin");
  // builtins.eval, a model class: the same.
  for (const auto& [module, name] : std::vector<std::pair<std::string, std::string>>{
           {"builtins", "eval"}, {"__torch__.Model", "Model"}, {"torch._utils", "_rebuild_qtensor"}}) {
    const std::string f = Archive(*Dict({{"w", Call(module, name, {})}}), {});
    MemorySource s(f);
    EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s, "g.pt"); }), module + "." + name);
  }
}

TEST(TorchSaveFile, TrainingStateFlattenedAsDcpDoes) {
  // {"epoch": 3, "optim": {"state": {0: {"m": t}}, "param_groups": [{"lr": 0.5, "params": [0]}]},
  //  "bufs": [t, t]}: lists holding tensors are walked by index, other values are objects.
  auto group = Value::Dict({{Value::Str("lr"), Value::Float(0.5)}, {Value::Str("params"), Value::List({Value::Int(0)})}});
  auto state = Value::Dict({{Value::Int(0), Dict({{"m", Tensor("0", "FloatStorage", 2, 0, {2}, {1})}})}});
  const ValuePtr root = Dict({
      {"epoch", Value::Int(3)},
      {"optim", Dict({{"state", state}, {"param_groups", Value::List({group})}})},
      {"bufs", Value::List({Tensor("0", "FloatStorage", 2, 0, {1}, {1}), Tensor("0", "FloatStorage", 2, 1, {1}, {1})})},
  });
  const std::string file = Archive(*root, {{"0", Floats(2, 5)}});
  MemorySource src(file);
  const SavedFile f = ReadTorchSaveFile(src, "t.pt");
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[0].fqn, "optim.state.0.m");
  EXPECT_EQ(f.tensors[1].fqn, "bufs.0");
  EXPECT_EQ(f.tensors[2].fqn, "bufs.1");
  EXPECT_EQ(AsFloats(GatherTensor(src, f.tensors[2], "f")), (std::vector<float>{6}));
  ASSERT_EQ(f.objects.size(), 2u);
  EXPECT_EQ(f.objects[0].fqn, "epoch");
  EXPECT_EQ(pickle::Repr(*torch_archive::DecodeObject(f.objects[0].archive, "epoch")), "3");
  EXPECT_EQ(f.objects[1].fqn, "optim.param_groups");
  EXPECT_EQ(pickle::Repr(*torch_archive::DecodeObject(f.objects[1].archive, "pg")), "[{'lr': 0.5, 'params': [0]}]");
}

TEST(TorchSaveFile, PlainValuesTheirPickleBuildsByCalls) {
  // bytes as protocol 2 pickles them, a set, a torch.Size, a device.
  const ValuePtr root = Dict({
      {"raw", Call("_codecs", "encode", {Value::Str("a\xc3\xbf"), Value::Str("latin1")})},
      {"tags", Call("builtins", "set", {Value::List({Value::Str("x")})})},
      {"shape", Call("torch", "Size", {Value::Tuple({Value::Int(2), Value::Int(3)})})},
      {"dev", Call("torch", "device", {Value::Str("cpu")})},
  });
  const std::string file = Archive(*root, {});
  MemorySource src(file);
  const SavedFile f = ReadTorchSaveFile(src, "p.pt");
  ASSERT_EQ(f.objects.size(), 4u);
  const pickle::ValuePtr raw = torch_archive::DecodeObject(f.objects[0].archive, "raw");
  EXPECT_EQ(raw->str, std::string("a\xff"));
  EXPECT_EQ(pickle::Repr(*torch_archive::DecodeObject(f.objects[1].archive, "tags")), "{'x'}");
  EXPECT_EQ(pickle::Repr(*torch_archive::DecodeObject(f.objects[2].archive, "shape")), "(2, 3)");
  EXPECT_EQ(pickle::Repr(*torch_archive::DecodeObject(f.objects[3].archive, "dev")), "'cpu'");
}

TEST(TorchSaveFile, RefusesWhatIsNotAStateDict) {
  {  // a dtype as a value: allowed global, but not a plain value dcpp keeps
    const std::string f = Archive(*Dict({{"dtype", Value::Global("torch", "float16")}}), {});
    MemorySource s(f);
    EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s, "g.pt"); }),
               "g.pt: key 'dtype' holds torch.float16, which is neither a tensor nor a plain value");
  }
  {
    const std::string f = Archive(*Tensor("0", "FloatStorage", 1, 0, {1}, {1}), {{"0", Floats(1, 0)}});
    MemorySource s(f);
    EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s, "g.pt"); }), "not a dict of tensors");
  }
  {  // a storage the archive lacks, a view past its storage
    const std::string f = Archive(*Dict({{"w", Tensor("9", "FloatStorage", 4, 0, {4}, {1})}}), {});
    MemorySource s(f);
    EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s, "g.pt"); }), "key 'w' names storage 9, which is missing");
    const std::string f2 = Archive(*Dict({{"w", Tensor("0", "FloatStorage", 4, 2, {4}, {1})}}), {{"0", Floats(4, 0)}});
    MemorySource s2(f2);
    EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s2, "g.pt"); }), "reaches past its storage");
    // sizes whose product wraps around int64 (to 0)
    const int64_t big = int64_t{1} << 32;
    const std::string f3 = Archive(*Dict({{"w", Tensor("0", "FloatStorage", 4, 0, {big, big, 1}, {1, 1, 1})}}),
                                   {{"0", Floats(4, 0)}});
    MemorySource s3(f3);
    EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s3, "g.pt"); }), "g.pt: key 'w' has sizes, strides or a storage offset out of range");
  }
}

TEST(TorchSaveFile, RefusesLegacyTruncatedAndForeignFiles) {
  const std::string legacy("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15);
  EXPECT_TRUE(LooksLikeTorchSave(legacy));
  MemorySource s1(legacy);
  EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s1, "/old/model.pth"); }), "/old/model.pth is in torch.save's legacy format");

  const std::string good = Archive(*Dict({{"w", Tensor("0", "FloatStorage", 4, 0, {4}, {1})}}), {{"0", Floats(4, 0)}});
  for (size_t keep : {good.size() - 10, good.size() / 2, size_t{3}}) {
    const std::string cut = good.substr(0, keep);
    MemorySource s(cut);
    const std::string err = ErrorOf([&] { ReadTorchSaveFile(s, "/m/cut.bin"); });
    EXPECT_HAS(err, "/m/cut.bin");
  }
  const std::string foreign = "hello, not a checkpoint";  // (MemorySource does not own it)
  MemorySource s3(foreign);
  EXPECT_FALSE(LooksLikeTorchSave("hello, not a checkpoint"));
  EXPECT_HAS(ErrorOf([&] { ReadTorchSaveFile(s3, "t.bin"); }), "t.bin is not a torch.save file");
}

TEST(TorchSaveFile, EveryCorruptedByteIsReadOrRefused) {
  // Each byte of a small file set to 0xff, 0x00 and flipped: the file reads (the byte was data)
  // or fails with a dcpp::Error; nothing else (no crash, no other exception; ASan and UBSan
  // builds check the rest).
  auto od = Call("collections", "OrderedDict", {});
  od->dict.emplace_back(Value::Str("t"), Tensor("0", "FloatStorage", 6, 0, {3, 2}, {1, 3}));
  const ValuePtr root = Dict({{"m", od}, {"v", Tensor("0", "FloatStorage", 6, 2, {2}, {2})}, {"n", Value::Int(4)}});
  const std::string good = Archive(*root, {{"0", Floats(6, 0)}});
  int read = 0, refused = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (int how = 0; how < 3; ++how) {
      std::string bad = good;
      bad[i] = how == 0 ? '\xff' : how == 1 ? '\0' : static_cast<char>(bad[i] ^ 0x5a);
      MemorySource s(bad);
      try {
        for (const SavedTensor& t : ReadTorchSaveFile(s, "f").tensors) GatherTensor(s, t, "f");
        ++read;
      } catch (const Error&) {
        ++refused;
      }
    }
  }
  EXPECT_GT(read, 0);
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace torchsave
}  // namespace dcpp
