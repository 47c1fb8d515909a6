// TorchSaveReader over folders built by hand: one file, Hugging Face shards with an index,
// Meta's consolidated files put together by the Llama layout; detection; views served whole;
// a load through the engine; the CRC-32 check.
#include "core/storage/torchsave/torchsave.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/storage/open.h"
#include "core/storage/torchsave/torchsave_test_util.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using namespace torchsave_testing;  // NOLINT
using testing::ErrorOf;
using testing::TempDir;
using testing::WriteFile;

// The bytes of a chunk, read through the reader as the engine reads them.
std::string ChunkBytes(StorageReader& r, const proto::ChunkMeta& c) {
  std::unique_ptr<FileSource> src = r.Open(c.file());
  std::string out(c.length(), '\0');
  if (!out.empty()) src->ReadAt(c.offset(), out.data(), out.size());
  return out;
}

std::vector<float> AsFloats(const std::string& bytes) {
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

const proto::TensorMeta& Find(const proto::Metadata& md, const std::string& fqn) {
  for (const auto& t : md.tensors()) {
    if (t.fqn() == fqn) return t;
  }
  throw Error("no key " + fqn);
}

// {w: [2, 3] of 0..5, wt: its transpose (a view of the same storage)}.
std::string TiedFile() {
  return Archive(*Dict({{"w", Tensor("0", "FloatStorage", 6, 0, {2, 3}, {3, 1})},
                        {"wt", Tensor("0", "FloatStorage", 6, 0, {3, 2}, {1, 3})}}),
                 {{"0", Floats(6, 0)}});
}

TEST(TorchSaveReader, OneFileWithAView) {
  TempDir dir;
  WriteFile(dir / "pytorch_model.bin", TiedFile());
  EXPECT_STREQ(DetectFormat(dir / "pytorch_model.bin").name(), "torchsave");
  EXPECT_STREQ(DetectFormat(dir.path()).name(), "torchsave");
  auto reader = OpenReader(dir / "pytorch_model.bin");
  const proto::Metadata md = ParseMetadata(reader->ReadMetadata(), dir.path());
  EXPECT_EQ(md.creator(), "torch.save");
  EXPECT_EQ(md.planner_data().at("torchsave.layout"), "file");
  ASSERT_EQ(md.tensors_size(), 2);
  const proto::TensorMeta& w = Find(md, "w");
  ASSERT_EQ(w.chunks_size(), 1);
  EXPECT_EQ(w.chunks(0).file(), "pytorch_model.bin");
  EXPECT_EQ(AsFloats(ChunkBytes(*reader, w.chunks(0))), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  const proto::TensorMeta& wt = Find(md, "wt");
  EXPECT_EQ(std::vector<int64_t>(wt.shape().begin(), wt.shape().end()), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(AsFloats(ChunkBytes(*reader, wt.chunks(0))), (std::vector<float>{0, 3, 1, 4, 2, 5}));

  // Through the engine: load allocates and fills both.
  StateDict sd;
  sd.AddUnallocated("wt", at::kFloat, {3, 2}, Layout::Replicated(1), 0);
  load(sd, *reader);
  EXPECT_TRUE(at::equal(sd.tensors()[0].chunks[0].tensor, at::arange(6, at::kFloat).reshape({2, 3}).t()));
}

TEST(TorchSaveReader, HuggingFaceShardsWithAnIndex) {
  TempDir dir;
  WriteFile(dir / "pytorch_model-00001-of-00002.bin",
            Archive(*Dict({{"a", Tensor("0", "FloatStorage", 4, 0, {4}, {1})}}), {{"0", Floats(4, 10)}}));
  WriteFile(dir / "pytorch_model-00002-of-00002.bin",
            Archive(*Dict({{"b", Tensor("0", "FloatStorage", 2, 0, {2}, {1})}}), {{"0", Floats(2, 20)}}));
  WriteFile(dir / "pytorch_model.bin.index.json",
            R"({"metadata": {"total_size": 24}, "weight_map": {"a": "pytorch_model-00001-of-00002.bin",)"
            R"( "b": "pytorch_model-00002-of-00002.bin"}})");
  auto reader = OpenReader(dir.path());
  const proto::Metadata md = ParseMetadata(reader->ReadMetadata(), dir.path());
  EXPECT_EQ(md.planner_data().at("torchsave.layout"), "shards");
  EXPECT_EQ(AsFloats(ChunkBytes(*reader, Find(md, "a").chunks(0))), (std::vector<float>{10, 11, 12, 13}));
  EXPECT_EQ(Find(md, "b").chunks(0).file(), "pytorch_model-00002-of-00002.bin");
  EXPECT_EQ(AsFloats(ChunkBytes(*reader, Find(md, "b").chunks(0))), (std::vector<float>{20, 21}));

  // An index that disagrees with the files, or names a missing one.
  WriteFile(dir / "pytorch_model.bin.index.json",
            R"({"weight_map": {"a": "pytorch_model-00002-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}})");
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir.path())->ReadMetadata(); }),
             "pytorch_model.bin.index.json lists key 'a' in pytorch_model-00002-of-00002.bin, but " + dir.path() +
                 "/pytorch_model-00002-of-00002.bin does not hold it");
  WriteFile(dir / "pytorch_model.bin.index.json", R"({"weight_map": {"a": "gone.bin"}})");
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir.path())->ReadMetadata(); }), "names file gone.bin, which is missing");
}

// consolidated.NN.pth of a 2-way model-parallel tiny Llama: wq split on dim 0, wo on dim 1,
// the norm replicated, tok_embeddings on dim 1 (dim 4 in params.json, slices of 2 columns).
void WriteConsolidated(const TempDir& dir) {
  for (int r = 0; r < 2; ++r) {
    const float base = 100.0f * static_cast<float>(r);
    const ValuePtr root = Dict({
        {"tok_embeddings.weight", Tensor("0", "FloatStorage", 6, 0, {3, 2}, {2, 1})},
        {"layers.0.attention.wq.weight", Tensor("1", "FloatStorage", 8, 0, {2, 4}, {4, 1})},
        {"layers.0.attention.wo.weight", Tensor("2", "FloatStorage", 8, 0, {4, 2}, {1, 4})},  // stored transposed
        {"norm.weight", Tensor("3", "FloatStorage", 4, 0, {4}, {1})},
    });
    WriteFile(dir / ("consolidated.0" + std::to_string(r) + ".pth"),
              Archive(*root, {{"0", Floats(6, base)}, {"1", Floats(8, base + 10)}, {"2", Floats(8, base + 20)},
                              {"3", Floats(4, 7)}}));
  }
  WriteFile(dir / "params.json", R"({"dim": 4, "n_layers": 1, "n_heads": 2, "vocab_size": -1})");
}

TEST(TorchSaveReader, ConsolidatedFilesPutTogetherByTheLlamaLayout) {
  TempDir dir;
  WriteConsolidated(dir);
  auto reader = OpenReader(dir.path());
  const proto::Metadata md = ParseMetadata(reader->ReadMetadata(), dir.path());
  EXPECT_EQ(md.world_size(), 2);
  EXPECT_EQ(md.planner_data().at("torchsave.layout"), "llama");
  EXPECT_NE(md.planner_data().at("torchsave.params").find("\"dim\": 4"), std::string::npos);

  const proto::TensorMeta& emb = Find(md, "tok_embeddings.weight");
  EXPECT_EQ(std::vector<int64_t>(emb.shape().begin(), emb.shape().end()), (std::vector<int64_t>{3, 4}));
  ASSERT_EQ(emb.chunks_size(), 2);
  EXPECT_EQ(emb.chunks(1).offsets(1), 2);
  EXPECT_EQ(emb.chunks(1).file(), "consolidated.01.pth");
  EXPECT_EQ(AsFloats(ChunkBytes(*reader, emb.chunks(1))), (std::vector<float>{100, 101, 102, 103, 104, 105}));

  const proto::TensorMeta& wq = Find(md, "layers.0.attention.wq.weight");
  EXPECT_EQ(std::vector<int64_t>(wq.shape().begin(), wq.shape().end()), (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(wq.chunks(1).offsets(0), 2);
  EXPECT_EQ(wq.chunks(1).offsets(1), 0);

  const proto::TensorMeta& wo = Find(md, "layers.0.attention.wo.weight");
  EXPECT_EQ(std::vector<int64_t>(wo.shape().begin(), wo.shape().end()), (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(wo.chunks(1).offsets(1), 2);
  // Rank 1's slice is stored transposed: [4, 2] with strides (1, 4) over 120..127.
  EXPECT_EQ(AsFloats(ChunkBytes(*reader, wo.chunks(1))), (std::vector<float>{120, 124, 121, 125, 122, 126, 123, 127}));

  const proto::TensorMeta& norm = Find(md, "norm.weight");
  ASSERT_EQ(norm.chunks_size(), 1);
  EXPECT_EQ(norm.chunks(0).file(), "consolidated.00.pth");

  // The whole tensor through the engine, from both files.
  StateDict sd;
  sd.AddUnallocated("layers.0.attention.wq.weight", at::kFloat, {4, 4}, Layout::Replicated(1), 0);
  load(sd, *reader);
  const at::Tensor want = at::cat({at::arange(10, 18, at::kFloat), at::arange(110, 118, at::kFloat)}).reshape({4, 4});
  EXPECT_TRUE(at::equal(sd.tensors()[0].chunks[0].tensor, want));
}

TEST(TorchSaveReader, ConsolidatedRefusals) {
  TempDir dir;
  WriteConsolidated(dir);
  std::filesystem::remove(dir / "params.json");
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir.path())->ReadMetadata(); }), "params.json's `dim` tells which");
  WriteConsolidated(dir);
  std::filesystem::rename(dir / "consolidated.01.pth", dir / "consolidated.02.pth");
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir.path()); }), "rank 1's file is missing (found consolidated.02.pth)");
  std::filesystem::rename(dir / "consolidated.02.pth", dir / "consolidated.01.pth");
  WriteFile(dir / "consolidated.01.pth",
            Archive(*Dict({{"layers.0.attention.wqkv.weight", Tensor("0", "FloatStorage", 4, 0, {4}, {1})}}),
                    {{"0", Floats(4, 0)}}));
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir.path())->ReadMetadata(); }), "is in 1 of the files, not in every one");
}

TEST(TorchSaveReader, DetectionAndFolderRules) {
  TempDir dir;
  std::filesystem::create_directories(dir / "both");
  WriteFile(dir / "both/pytorch_model.bin", TiedFile());
  WriteFile(dir / "both/model.safetensors", std::string(8, '\0'));
  EXPECT_EQ(DetectFormat(dir / "both"), Format::kSafetensors);  // a Hugging Face folder with both
  EXPECT_STREQ(DetectFormat(dir / "both/pytorch_model.bin").name(), "torchsave");

  std::filesystem::create_directories(dir / "two");
  WriteFile(dir / "two/a.pt", TiedFile());
  WriteFile(dir / "two/b.pt", TiedFile());
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir / "two"); }), "holds several files (a.pt, b.pt, ...)");

  WriteFile(dir / "notes.bin", "not a torch.save file at all");
  EXPECT_HAS(ErrorOf([&] { DetectFormat(dir / "notes.bin"); }), "no checkpoint at");
  EXPECT_HAS(ErrorOf([&] { OpenWriter(dir / "out", ParseFormat("torchsave")); }), "a source only");
}

TEST(TorchSaveReader, CrcCheckNamesTheCorruptFile) {
  TempDir dir;
  std::string file = TiedFile();
  WriteFile(dir / "model.pt", file);
  TorchSaveCrcCheck ok = CheckTorchSaveCrcs(dir / "model.pt");
  EXPECT_TRUE(ok.problems.empty());
  EXPECT_EQ(ok.files, 1);
  EXPECT_EQ(ok.entries, 4);  // data.pkl, byteorder, data/0, version
  // Flip one byte of the storage (value 2.0f).
  const float two = 2;
  const size_t at = file.find(std::string(reinterpret_cast<const char*>(&two), 4));
  ASSERT_NE(at, std::string::npos);
  file[at + 3] ^= 0x01;
  WriteFile(dir / "model.pt", file);
  const TorchSaveCrcCheck bad = CheckTorchSaveCrcs(dir / "model.pt");
  ASSERT_EQ(bad.problems.size(), 1u);
  EXPECT_HAS(bad.problems[0], dir / "model.pt: entry archive/data/0 fails its CRC-32");
}

}  // namespace
}  // namespace dcpp
