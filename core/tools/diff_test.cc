// Diff(): checkpoints saved with the real engine in different layouts, compared by value.
#include "core/tools/diff.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::TempDir;

// One key of a checkpoint and how its ranks hold it.
struct Saved {
  std::string key;
  at::Tensor value;
  Layout layout = Layout::Replicated(1);
};

// Saves `entries` from one process, every rank of each key's layout adding its shard.
void SaveAs(const std::string& dir, const std::vector<Saved>& entries,
            const std::map<std::string, std::string>& blobs = {}) {
  StateDict sd;
  for (const Saved& e : entries) {
    for (int64_t rank = 0; rank < e.layout.world_size(); ++rank) {
      sd.AddSharded(e.key, e.value, e.layout, rank);
    }
  }
  for (const auto& [key, data] : blobs) sd.AddBytes(key, data);
  save(sd, dir);
}

// The same tensors under another layout for every key.
std::vector<Saved> Relayout(std::vector<Saved> entries, const std::function<Layout(const at::Tensor&)>& f) {
  for (Saved& e : entries) e.layout = f(e.value);
  return entries;
}

Layout Fsdp4(const at::Tensor& t) { return t.dim() == 0 ? Layout::Replicated(4) : Layout::Sharded(4, 0); }
// Tensor parallel over 2: matrices split by columns, vectors replicated.
Layout Tp2(const at::Tensor& t) { return t.dim() >= 2 ? Layout::Sharded(2, 1) : Layout::Replicated(2); }

std::vector<Saved> Model() {
  at::manual_seed(0);
  return {{"net1.weight", at::rand({16, 10})},
          {"net1.bias", at::rand({16})},
          {"net2.weight", at::rand({10, 16})},
          {"net2.bias", at::rand({10})},
          {"attn.qkv", at::rand({4, 6, 8}).to(at::kDouble)},
          {"step", at::scalar_tensor(7, at::kLong)},
          {"mask", at::rand({9, 4}).gt(0.5)},
          {"empty", at::zeros({0, 4})},
          {"hollow", at::zeros({3, 0})}};
}

std::vector<Saved> With(std::vector<Saved> entries, const std::string& key, const at::Tensor& value) {
  for (Saved& e : entries) {
    if (e.key == key) e.value = value;
  }
  return entries;
}

at::Tensor ValueOf(const std::vector<Saved>& entries, const std::string& key) {
  for (const Saved& e : entries) {
    if (e.key == key) return e.value;
  }
  throw Error("no key " + key);
}

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

TEST(Diff, SameValuesFsdp4VersusTp2AreIdentical) {
  TempDir dir;
  const std::vector<Saved> model = Model();
  SaveAs(dir / "fsdp", Relayout(model, Fsdp4), {{"rng", "seed=1"}});
  SaveAs(dir / "tp", Relayout(model, Tp2), {{"rng", "seed=1"}});
  for (int64_t budget : {int64_t{256} << 20, int64_t{2} << 10}) {
    DiffOptions opt;
    opt.memory_budget = budget;
    const DiffReport r = Diff(dir / "fsdp", dir / "tp", opt);
    EXPECT_TRUE(r.identical()) << DescribeDifference(r.differences.at(0));
    EXPECT_EQ(r.keys_compared, 10);
    int64_t bytes = 6;  // the blob
    for (const Saved& e : model) bytes += e.value.numel() * static_cast<int64_t>(e.value.element_size());
    EXPECT_EQ(r.bytes_compared, bytes);
  }
}

TEST(Diff, OneChangedElementIsNamedWithItsIndex) {
  TempDir dir;
  const std::vector<Saved> model = Model();
  at::Tensor w = ValueOf(model, "net2.weight").clone();
  w[2][7] += 0.5;
  SaveAs(dir / "a", Relayout(model, Fsdp4));
  SaveAs(dir / "b", Relayout(With(model, "net2.weight", w), Tp2));
  const DiffReport r = Diff(dir / "a", dir / "b");
  ASSERT_EQ(r.differences.size(), 1u);
  const KeyDiff& d = r.differences[0];
  EXPECT_EQ(d.key, "net2.weight");
  EXPECT_EQ(d.kind, "values");
  EXPECT_EQ(d.mismatched, 1);
  EXPECT_EQ(d.numel, 160);
  EXPECT_EQ(d.first_index, "[2, 7]");
  EXPECT_NEAR(d.max_abs_diff, 0.5, 1e-6);
  EXPECT_EQ(r.keys_compared, 9);
  EXPECT_EQ(DescribeDifference(d), "net2.weight: 1 of 160 elements differs (max |a-b| 0.5, first at [2, 7])");

  // Several changes in a 3-d tensor and a scalar: counted, the first in row-major order.
  at::Tensor q = ValueOf(model, "attn.qkv").clone();
  q[3][5][1] = -1;
  q[1][2][6] = 2;
  q[1][2][7] = 3;
  SaveAs(dir / "c", With(With(model, "attn.qkv", q), "step", at::scalar_tensor(8, at::kLong)));
  const DiffReport r2 = Diff(dir / "a", dir / "c");
  ASSERT_EQ(r2.differences.size(), 2u);
  EXPECT_EQ(r2.differences[0].key, "attn.qkv");
  EXPECT_EQ(r2.differences[0].mismatched, 3);
  EXPECT_EQ(r2.differences[0].first_index, "[1, 2, 6]");
  EXPECT_EQ(r2.differences[1].key, "step");
  EXPECT_EQ(r2.differences[1].first_index, "[]");
  EXPECT_EQ(r2.differences[1].max_abs_diff, 1);
}

TEST(Diff, AbsoluteToleranceForFloatsExactForIntegers) {
  TempDir dir;
  at::manual_seed(3);
  const at::Tensor f = at::rand({12, 5});
  at::Tensor g = f.clone();
  g[3][4] += 1e-4;
  at::Tensor nan = f.clone();
  nan[0][0] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor i = at::arange(20, at::kInt);
  SaveAs(dir / "a", {{"f", f, Layout::Sharded(3, 0)}, {"nan", nan}, {"i", i, Layout::Sharded(2, 0)}});
  SaveAs(dir / "b", {{"f", g, Layout::Sharded(2, 1)}, {"nan", nan, Layout::Sharded(2, 0)}, {"i", i + (i == 5)}});

  DiffOptions loose;
  loose.atol = 1e-3;
  DiffReport r = Diff(dir / "a", dir / "b", loose);
  ASSERT_EQ(r.differences.size(), 1u);  // the integer change is never within tolerance
  EXPECT_EQ(r.differences[0].key, "i");
  EXPECT_EQ(r.differences[0].first_index, "[5]");

  r = Diff(dir / "a", dir / "b");  // atol 0: bitwise
  ASSERT_EQ(r.differences.size(), 2u);
  EXPECT_EQ(r.differences[0].key, "f");
  EXPECT_EQ(r.differences[0].mismatched, 1);
  EXPECT_EQ(r.differences[0].first_index, "[3, 4]");
  EXPECT_NEAR(r.differences[0].max_abs_diff, 1e-4, 1e-6);

  DiffOptions tight;
  tight.atol = 1e-5;
  EXPECT_EQ(Diff(dir / "a", dir / "b", tight).differences.size(), 2u);

  tight.atol = -1;
  EXPECT_THAT([&] { Diff(dir / "a", dir / "b", tight); }, ThrowsMessage<Error>(HasSubstr("atol")));
}

TEST(Diff, DtypeShapeAndKindMismatchesAreNotComparedByValue) {
  TempDir dir;
  const at::Tensor w = at::rand({4, 6});
  SaveAs(dir / "a", {{"w", w}, {"v", w}, {"t", w}});
  SaveAs(dir / "b", {{"w", w.to(at::kBFloat16)}, {"v", w.t().contiguous()}}, {{"t", "blob"}});
  const DiffReport r = Diff(dir / "a", dir / "b");
  ASSERT_EQ(r.differences.size(), 3u);
  EXPECT_EQ(r.differences[0].key, "t");
  EXPECT_EQ(r.differences[0].kind, "dtype");
  EXPECT_EQ(r.differences[0].detail, "tensor (float32) vs bytes entry");
  EXPECT_EQ(r.differences[1].key, "v");
  EXPECT_EQ(r.differences[1].kind, "shape");
  EXPECT_EQ(DescribeDifference(r.differences[1]), "v: shape [4, 6] vs [6, 4]");
  EXPECT_EQ(r.differences[2].kind, "dtype");
  EXPECT_EQ(DescribeDifference(r.differences[2]), "w: dtype float32 vs bfloat16");
  EXPECT_EQ(r.bytes_compared, 0);
}

TEST(Diff, KeysOnOneSideOnly) {
  TempDir dir;
  const at::Tensor w = at::rand({3, 3});
  SaveAs(dir / "a", {{"w", w}, {"optim.state.x", w}});
  SaveAs(dir / "b", {{"w", w}}, {{"rng", "x"}});
  const DiffReport r = Diff(dir / "a", dir / "b");
  ASSERT_EQ(r.differences.size(), 2u);
  EXPECT_EQ(DescribeDifference(r.differences[0]), "only in A: optim.state.x");
  EXPECT_EQ(DescribeDifference(r.differences[1]), "only in B: rng");
  EXPECT_EQ(r.keys_compared, 1);
}

TEST(Diff, BytesEntriesCompareExactly) {
  TempDir dir;
  const at::Tensor w = at::rand({2});
  SaveAs(dir / "a", {{"w", w}}, {{"rng", "abcdef"}, {"cfg", "lr=1"}, {"same", "x"}});
  SaveAs(dir / "b", {{"w", w}}, {{"rng", "abcXeY"}, {"cfg", "lr=10"}, {"same", "x"}});
  const DiffReport r = Diff(dir / "a", dir / "b");
  ASSERT_EQ(r.differences.size(), 2u);
  EXPECT_EQ(r.differences[0].key, "cfg");
  EXPECT_EQ(r.differences[0].kind, "bytes");
  EXPECT_EQ(DescribeDifference(r.differences[0]), "cfg: bytes entry length 4 vs 5 bytes");
  EXPECT_EQ(r.differences[1].key, "rng");
  EXPECT_EQ(r.differences[1].mismatched, 2);
  EXPECT_EQ(DescribeDifference(r.differences[1]), "rng: bytes entry: 2 of 6 bytes differ (first at byte 3)");
}

TEST(Diff, Bfloat16) {
  TempDir dir;
  at::manual_seed(4);
  const at::Tensor w = at::rand({8, 12}).to(at::kBFloat16);
  at::Tensor v = w.clone();
  v[5][11] = 1.0;
  v[6][0] = 1.0078125;  // the next bfloat16 after 1
  SaveAs(dir / "a", {{"w", w, Layout::Sharded(2, 0)}, {"v", at::ones({3}, at::kBFloat16)}});
  SaveAs(dir / "b", {{"w", w, Layout::Sharded(3, 1)}, {"v", at::ones({3}, at::kBFloat16)}});
  EXPECT_TRUE(Diff(dir / "a", dir / "b").identical());

  SaveAs(dir / "c", {{"w", w, Layout::Sharded(3, 1)}, {"v", at::tensor({1.0, 1.0078125, 1.0}).to(at::kBFloat16)}});
  DiffOptions opt;
  opt.atol = 0.01;
  EXPECT_TRUE(Diff(dir / "a", dir / "c", opt).identical());
  opt.atol = 0.001;
  const DiffReport r = Diff(dir / "a", dir / "c", opt);
  ASSERT_EQ(r.differences.size(), 1u);
  EXPECT_EQ(r.differences[0].first_index, "[1]");
  EXPECT_EQ(r.differences[0].max_abs_diff, 0.0078125);

  SaveAs(dir / "d", {{"w", v, Layout::Sharded(4, 0)}, {"v", at::ones({3}, at::kBFloat16)}});
  const DiffReport r2 = Diff(dir / "a", dir / "d");
  ASSERT_EQ(r2.differences.size(), 1u);
  EXPECT_EQ(r2.differences[0].mismatched, 2);  // rand() < 1
  EXPECT_EQ(r2.differences[0].first_index, "[5, 11]");
}

TEST(Diff, TinyMemoryBudgetStreamsManyBands) {
  TempDir dir;
  at::manual_seed(5);
  const at::Tensor big = at::rand({128, 128});  // 64 KiB, rows of 512 bytes
  const at::Tensor vec = at::rand({16384});     // 64 KiB, one element per row
  at::Tensor big2 = big.clone(), vec2 = vec.clone();
  big2[100][77] = 2;
  big2[127][127] = 3;
  vec2[9999] = -1;
  SaveAs(dir / "a", {{"big", big, Layout::Sharded(3, 0)}, {"vec", vec, Layout::Sharded(3, 0)}});
  SaveAs(dir / "b", {{"big", big2, Layout::Sharded(2, 1)}, {"vec", vec2, Layout::Sharded(5, 0)}});
  DiffOptions opt;
  opt.memory_budget = 4 << 10;
  const DiffReport r = Diff(dir / "a", dir / "b", opt);
  ASSERT_EQ(r.differences.size(), 2u);
  EXPECT_EQ(r.differences[0].key, "big");
  EXPECT_EQ(r.differences[0].mismatched, 2);
  EXPECT_EQ(r.differences[0].first_index, "[100, 77]");
  EXPECT_EQ(r.differences[1].key, "vec");
  EXPECT_EQ(r.differences[1].mismatched, 1);
  EXPECT_EQ(r.differences[1].first_index, "[9999]");
  EXPECT_EQ(r.bytes_compared, 2 * (64 << 10));

  // A row that does not fit: an error naming the key.
  opt.memory_budget = 1000;
  EXPECT_THAT([&] { Diff(dir / "a", dir / "b", opt); },
              ThrowsMessage<Error>(AllOf(HasSubstr("key 'big'"), HasSubstr("memory budget"))));
}

TEST(Diff, CorruptByteIsAChecksumErrorNamingTheKey) {
  TempDir dir;
  const std::vector<Saved> model = Model();
  SaveAs(dir / "a", Relayout(model, Fsdp4));
  SaveAs(dir / "b", Relayout(model, Tp2));
  const proto::Metadata md = ParseMetadata(FileSystemReader(dir / "b").ReadMetadata(), dir / "b");
  const proto::ChunkMeta* chunk = nullptr;
  for (const auto& t : md.tensors()) {
    if (t.fqn() == "net1.weight") chunk = &t.chunks(1);
  }
  ASSERT_NE(chunk, nullptr);
  {
    std::fstream f(dir / "b" + "/" + chunk->file(), std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(chunk->offset() + 5);
    f.seekg(at);
    const char c = static_cast<char>(f.get() ^ 0x10);
    f.seekp(at);
    f.put(c);
  }
  EXPECT_THAT([&] { Diff(dir / "a", dir / "b"); },
              ThrowsMessage<Error>(AllOf(HasSubstr("checksum mismatch for key 'net1.weight'"),
                                         HasSubstr(chunk->file()))));

  // Without verification the flipped byte is a value difference.
  DiffOptions opt;
  opt.verify_checksums = false;
  const DiffReport r = Diff(dir / "a", dir / "b", opt);
  ASSERT_EQ(r.differences.size(), 1u);
  EXPECT_EQ(r.differences[0].key, "net1.weight");
  EXPECT_EQ(r.differences[0].mismatched, 1);

  EXPECT_THAT([&] { Diff(dir / "a", dir / "none"); }, ThrowsMessage<Error>(HasSubstr(dir / "none")));
}


// NVFP4 data (two 4-bit values a byte) and bit containers have no conversion to double: they
// compare bit for bit, counting the bytes that differ; MX scales (float8_e8m0fnu) by value.
TEST(Diff, PackedAndBitsDtypesCompareBitForBit) {
  TempDir dir;
  const at::Tensor q = at::arange(40, at::kByte).view(at::kFloat4_e2m1fn_x2).view({5, 8});
  const at::Tensor b = at::arange(12, at::kByte).view(c10::ScalarType::Bits16).view({2, 3});
  const at::Tensor s = at::arange(120, 126, at::kByte).view(at::kFloat8_e8m0fnu);
  SaveAs(dir / "a", {{"q", q, Layout::Sharded(2, 1)}, {"b", b}, {"s", s}});
  SaveAs(dir / "b", {{"q", q, Layout::Sharded(5, 0)}, {"b", b, Layout::Sharded(2, 0)}, {"s", s}});
  EXPECT_TRUE(Diff(dir / "a", dir / "b").identical());

  at::Tensor q2 = q.view(at::kByte).clone();
  q2[3][6] = 0xff;
  at::Tensor b2 = b.view(at::kByte).clone();
  b2[1][1] = 0x55;  // element [1, 0] of the bits16 view: bytes 6 and 7
  at::Tensor s2 = s.clone().view(at::kByte);
  s2[2] = 127;  // 2^0 for 2^(122-127)
  SaveAs(dir / "c", {{"q", q2.view(at::kFloat4_e2m1fn_x2)}, {"b", b2.view(c10::ScalarType::Bits16)},
                     {"s", s2.view(at::kFloat8_e8m0fnu)}});
  const DiffReport r = Diff(dir / "a", dir / "c");
  ASSERT_EQ(r.differences.size(), 3u);
  EXPECT_EQ(r.differences[0].key, "b");
  EXPECT_EQ(r.differences[0].first_index, "[1, 0]");
  EXPECT_EQ(r.differences[1].key, "q");
  EXPECT_EQ(r.differences[1].mismatched, 1);
  EXPECT_EQ(r.differences[1].first_index, "[3, 6]");
  EXPECT_EQ(r.differences[2].key, "s");
  EXPECT_EQ(r.differences[2].first_index, "[2]");
  EXPECT_EQ(r.differences[2].max_abs_diff, 1.0 - 1.0 / 32);
}

}  // namespace
}  // namespace dcpp
