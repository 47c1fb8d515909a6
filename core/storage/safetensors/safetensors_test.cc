// SafetensorsReader on files written byte by byte here: the metadata it describes, values
// loaded back through dcpp::load (whole and resharded), folders with and without an index,
// and every malformed header refused with a message naming the file and the tensor.
#include "core/storage/safetensors/safetensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::TempDir;
using testing::WriteFile;

std::string Le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file: the header (padded with spaces to a multiple of 8, as the library does)
// and the data area.
std::string Safetensors(std::string header, const std::string& data) {
  header.resize((header.size() + 7) / 8 * 8, ' ');
  return Le64(header.size()) + header + data;
}

std::string BytesOf(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes()));
}

struct Sample {
  at::Tensor w = at::arange(6, at::kFloat).reshape({2, 3});
  at::Tensor b = at::tensor({1.5, -2.0, 3.25}).to(at::kBFloat16);
  at::Tensor i = at::tensor({int64_t{-7}, int64_t{1} << 40});
  at::Tensor s = at::scalar_tensor(42.0, at::kFloat);
  at::Tensor e = at::zeros({0, 4}, at::kFloat);

  // Data in another order than the header's: b, i, w, s (e is empty).
  std::string File() const {
    const std::string header =
        R"({"__metadata__":{"format":"pt","note":"hand-built"},)"
        R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[22,46]},)"
        R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]},)"
        R"("i":{"dtype":"I64","shape":[2],"data_offsets":[6,22]},)"
        R"("s":{"dtype":"F32","shape":[],"data_offsets":[46,50]},)"
        R"("e":{"dtype":"F32","shape":[0,4],"data_offsets":[50,50]}})";
    return Safetensors(header, BytesOf(b) + BytesOf(i) + BytesOf(w) + BytesOf(s));
  }
};

const proto::TensorMeta& Find(const proto::Metadata& md, const std::string& fqn) {
  for (const auto& t : md.tensors()) {
    if (t.fqn() == fqn) return t;
  }
  throw Error("no key " + fqn);
}

// Loads `fqn` whole from `reader` (rank `rank` of `layout`, by default all of it).
at::Tensor LoadKey(StorageReader& reader, const std::string& fqn, const at::Tensor& like,
                   const Layout& layout = Layout::Replicated(1), int64_t rank = 0) {
  StateDict sd;
  sd.AddUnallocated(fqn, like.scalar_type(), like.sizes().vec(), layout, rank);
  load(sd, reader);
  return sd.FindTensor(fqn)->chunks.at(0).tensor;
}

TEST(SafetensorsReader, DescribesOneFile) {
  TempDir dir;
  const std::string file = Sample().File();
  WriteFile(dir / "model.safetensors", file);
  SafetensorsReader reader(dir / "model.safetensors");
  EXPECT_EQ(reader.Describe(), dir.path());
  const proto::Metadata md = ParseMetadata(reader.ReadMetadata(), reader.Describe());
  EXPECT_EQ(md.checksum_algorithm(), kNoChecksum);
  EXPECT_EQ(md.creator(), "safetensors");
  EXPECT_EQ(md.world_size(), 1);
  EXPECT_EQ(md.planner_data().at("safetensors.format"), "pt");
  EXPECT_EQ(md.planner_data().at("safetensors.note"), "hand-built");
  ASSERT_EQ(md.tensors_size(), 5);
  EXPECT_EQ(md.tensors(0).fqn(), "b");  // sorted by name
  const proto::TensorMeta& w = Find(md, "w");
  EXPECT_EQ(w.dtype(), "float32");
  EXPECT_EQ(std::vector<int64_t>(w.shape().begin(), w.shape().end()), (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(w.chunks_size(), 1);
  const uint64_t data_start = file.size() - 50;  // 50 bytes of data
  EXPECT_EQ(w.chunks(0).file(), "model.safetensors");
  EXPECT_EQ(w.chunks(0).offset(), data_start + 22);
  EXPECT_EQ(w.chunks(0).length(), 24u);
  EXPECT_EQ(ChunkBox(w.chunks(0)), (Box{{0, 0}, {2, 3}}));
  EXPECT_EQ(Find(md, "b").dtype(), "bfloat16");
  EXPECT_EQ(Find(md, "i").dtype(), "int64");
  EXPECT_EQ(Find(md, "s").shape_size(), 0);
  EXPECT_EQ(Find(md, "e").chunks(0).length(), 0u);
}

TEST(SafetensorsReader, ValuesLoadWholeAndResharded) {
  TempDir dir;
  const Sample s;
  WriteFile(dir / "model.safetensors", s.File());
  SafetensorsReader reader(dir / "model.safetensors");
  // The metadata says checksums "none", so load() does not verify them.
  EXPECT_TRUE(at::equal(LoadKey(reader, "w", s.w), s.w));
  EXPECT_TRUE(at::equal(LoadKey(reader, "b", s.b), s.b));
  EXPECT_TRUE(at::equal(LoadKey(reader, "i", s.i), s.i));
  EXPECT_TRUE(at::equal(LoadKey(reader, "s", s.s), s.s));
  EXPECT_EQ(LoadKey(reader, "e", s.e).sizes(), s.e.sizes());
  // Rank 1 of a column split, and the whole file at once into a StateDict.
  EXPECT_TRUE(at::equal(LoadKey(reader, "w", s.w, Layout::Sharded(2, 1), 1), s.w.narrow(1, 2, 1)));
  StateDict sd;
  sd.AddTensor("w", at::zeros({2, 3}));
  sd.AddTensor("i", at::zeros({2}, at::kLong));
  load(sd, reader);
  EXPECT_TRUE(at::equal(sd.FindTensor("w")->chunks[0].tensor, s.w));
  EXPECT_TRUE(at::equal(sd.FindTensor("i")->chunks[0].tensor, s.i));
}

TEST(SafetensorsReader, ShardsWithIndex) {
  TempDir dir;
  const at::Tensor a = at::arange(4, at::kInt), b = at::arange(3, at::kDouble);
  WriteFile(dir / "model-00001-of-00002.safetensors",
            Safetensors(R"({"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}})", BytesOf(a)));
  WriteFile(dir / "model-00002-of-00002.safetensors",
            Safetensors(R"({"b":{"dtype":"F64","shape":[3],"data_offsets":[0,24]}})", BytesOf(b)));
  WriteFile(dir / "model.safetensors.index.json",
            R"({"metadata": {"total_size": 40}, "weight_map": {"a": "model-00001-of-00002.safetensors",)"
            R"( "b": "model-00002-of-00002.safetensors"}})");
  WriteFile(dir / "stray.safetensors", "not named by the index");
  EXPECT_TRUE(IsSafetensors(dir.path()));
  SafetensorsReader reader(dir.path());
  EXPECT_EQ(reader.files(), (std::vector<std::string>{"model-00001-of-00002.safetensors",
                                                      "model-00002-of-00002.safetensors"}));
  const proto::Metadata md = ParseMetadata(reader.ReadMetadata(), reader.Describe());
  EXPECT_EQ(Find(md, "b").chunks(0).file(), "model-00002-of-00002.safetensors");
  EXPECT_TRUE(at::equal(LoadKey(reader, "a", a), a));
  EXPECT_TRUE(at::equal(LoadKey(reader, "b", b), b));
  EXPECT_HAS(ErrorOf([&] { reader.Open("stray.safetensors"); }), "has no file 'stray.safetensors'");
}

TEST(SafetensorsReader, FolderWithoutIndex) {
  TempDir dir;
  const at::Tensor a = at::arange(4, at::kInt), b = at::arange(3, at::kDouble);
  WriteFile(dir / "one.safetensors",
            Safetensors(R"({"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}})", BytesOf(a)));
  WriteFile(dir / "two.safetensors",
            Safetensors(R"({"b":{"dtype":"F64","shape":[3],"data_offsets":[0,24]}})", BytesOf(b)));
  SafetensorsReader reader(dir.path() + "/");
  EXPECT_EQ(reader.Describe(), dir.path());
  EXPECT_TRUE(at::equal(LoadKey(reader, "b", b), b));
  // The same tensor in two files.
  WriteFile(dir / "three.safetensors",
            Safetensors(R"({"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}})", BytesOf(a)));
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader(dir.path()).ReadMetadata(); }),
             "tensor 'a' is in both one.safetensors and three.safetensors");
}

TEST(SafetensorsReader, IndexMustMatchTheFiles) {
  TempDir dir;
  const std::string shard = Safetensors(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xy");
  WriteFile(dir / "s1.safetensors", shard);
  auto index = [&](const std::string& map) {
    WriteFile(dir / kSafetensorsIndex, R"({"weight_map": {)" + map + "}}");
    return ErrorOf([&] { SafetensorsReader(dir.path()).ReadMetadata(); });
  };
  EXPECT_EQ(index(R"("a": "s1.safetensors")"), "(no error)");
  EXPECT_HAS(index(R"("a": "s1.safetensors", "b": "s1.safetensors")"),
             "lists tensor 'b' in s1.safetensors, but " + dir.path() + "/s1.safetensors does not hold it");
  EXPECT_HAS(index(R"("b": "s1.safetensors")"),
             dir.path() + "/s1.safetensors holds tensor 'a', which model.safetensors.index.json does not list");
  EXPECT_HAS(index(R"("a": "s1.safetensors", "c": "s2.safetensors")"), "names file s2.safetensors, which is missing");
  EXPECT_HAS(index(R"("a": "../s1.safetensors")"), "tensor 'a' maps to '../s1.safetensors', which is not a plain");
  WriteFile(dir / kSafetensorsIndex, "{\"weight_map\": [");
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader{dir.path()}; }), "model.safetensors.index.json is not valid JSON");
}

// The message reading `file_bytes` as x.safetensors fails with.
std::string HeaderError(const std::string& file_bytes) {
  TempDir dir;
  WriteFile(dir / "x.safetensors", file_bytes);
  return ErrorOf([&] { SafetensorsReader(dir / "x.safetensors").ReadMetadata(); });
}

TEST(SafetensorsReader, RefusesMalformedHeaders) {
  const std::string f = "x.safetensors";
  const std::string ok = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(HeaderError(Safetensors(ok, std::string(8, '\0'))), "(no error)");

  std::string m = HeaderError("abc");
  EXPECT_HAS(m, f);
  EXPECT_HAS(m, "truncated: 3 bytes, less than the 8-byte header length");
  m = HeaderError(Le64(1000) + "{}");
  EXPECT_HAS(m, f);
  EXPECT_HAS(m, "header length 1000 goes beyond the end of the file (10 bytes");
  EXPECT_HAS(HeaderError(Le64(uint64_t{1} << 40) + "{}"), "larger than the 100 MiB limit");
  EXPECT_HAS(HeaderError(Safetensors(R"({"t": {"dtype": )", "")), f + ": the header is not valid JSON");
  EXPECT_HAS(HeaderError(Safetensors("[1, 2]", "")), f + ": the header is not a JSON object");

  auto tensor_error = [&](const std::string& entry, const std::string& data) {
    return HeaderError(Safetensors(R"({"ok":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":)" + entry + "}", data));
  };
  const std::string t = f + ": tensor 't'";
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[2],"data_offsets":[1,9]})", std::string(8, '\0')),
             t + " has data_offsets [1, 9] beyond the data area (8 bytes");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[2],"data_offsets":[1,5]})", std::string(8, '\0')),
             t + " has data_offsets [1, 5] (4 bytes) but its F32 shape [2] needs 8 bytes");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})", std::string(8, '\0')),
             ": tensors 'ok' [0, 1) and 't' [0, 4) overlap");
  // F6_E3M2 has no LibTorch dtype (F4, refused here once, is float4_e2m1fn_x2 now).
  EXPECT_HAS(tensor_error(R"({"dtype":"F6_E3M2","shape":[2],"data_offsets":[1,2]})", std::string(2, '\0')),
             t + " has dtype F6_E3M2, which dcpp does not support (it reads BOOL U8");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[-2],"data_offsets":[1,9]})", std::string(9, '\0')),
             t + " has a negative size in its shape [-2]");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[2.5],"data_offsets":[1,9]})", std::string(9, '\0')),
             t + " has a shape [2.5] that is not a list of integers");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[2],"data_offsets":[9,1]})", std::string(9, '\0')),
             t + " has data_offsets [9, 1] that end before they begin");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[2],"data_offsets":[1]})", std::string(9, '\0')),
             t + " has data_offsets [1]; expected [begin, end]");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[2]})", std::string(9, '\0')), t + " has no data_offsets");
  EXPECT_HAS(tensor_error(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[1,9]})", "x"),
             t + " has a shape [4294967296,4294967296] too large");
  EXPECT_HAS(tensor_error("7", "x"), t + " is not a JSON object");
  EXPECT_HAS(HeaderError(Safetensors(R"({"__metadata__":{"a":1}})", "")), "__metadata__ entry 'a' is not a string");
}

TEST(SafetensorsReader, NoCheckpoint) {
  TempDir dir;
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader{dir / "none"}; }), dir.path() + "/none: no such file or folder");
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader{dir.path()}; }),
             "no safetensors checkpoint in " + dir.path() + ": no model.safetensors.index.json and no *.safetensors");
  EXPECT_FALSE(IsSafetensors(dir.path()));
  EXPECT_FALSE(IsSafetensors(dir / "none"));
  WriteFile(dir / "a.safetensors", "");
  EXPECT_TRUE(IsSafetensors(dir.path()));
  EXPECT_TRUE(IsSafetensors(dir / "a.safetensors"));
  WriteFile(dir / ".metadata", "");
  EXPECT_FALSE(IsSafetensors(dir.path()));  // a native checkpoint's folder
}

// F4 counts 4-bit values, so [2, 6] in the header is dcpp's float4_e2m1fn_x2 [2, 3] (6 bytes);
// F8_E8M0 is one byte a value. An odd F4 last dimension does not fill whole bytes.
TEST(SafetensorsReader, ReadsMxAndNvfp4Dtypes) {
  TempDir dir;
  const std::string data = "\x01\x23\x45\x67\x89\xab" "\x7f\x80\x81";
  WriteFile(dir / "m.safetensors",
            Safetensors(R"({"q":{"dtype":"F4","shape":[2,6],"data_offsets":[0,6]},)"
                        R"("s":{"dtype":"F8_E8M0","shape":[3],"data_offsets":[6,9]}})",
                        data));
  SafetensorsReader reader(dir / "m.safetensors");
  const proto::Metadata md = ParseMetadata(reader.ReadMetadata(), reader.Describe());
  EXPECT_EQ(Find(md, "q").dtype(), "float4_e2m1fn_x2");
  EXPECT_EQ(std::vector<int64_t>(Find(md, "q").shape().begin(), Find(md, "q").shape().end()),
            (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(Find(md, "s").dtype(), "float8_e8m0fnu");
  const at::Tensor q = LoadKey(reader, "q", at::empty({2, 3}, at::kFloat4_e2m1fn_x2));
  EXPECT_EQ(q.scalar_type(), at::kFloat4_e2m1fn_x2);
  EXPECT_EQ(BytesOf(q), data.substr(0, 6));
  const at::Tensor s = LoadKey(reader, "s", at::empty({3}, at::kFloat8_e8m0fnu));
  EXPECT_EQ(BytesOf(s), data.substr(6));

  WriteFile(dir / "odd.safetensors",
            Safetensors(R"({"q":{"dtype":"F4","shape":[2,5],"data_offsets":[0,5]}})", data.substr(0, 5)));
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader(dir / "odd.safetensors").ReadMetadata(); }),
             "tensor 'q' has F4 shape [2,5] whose last dimension is not a multiple of 2");
}

TEST(SafetensorsReader, Dtypes) {
  EXPECT_EQ(DtypeFromSafetensors("F8_E4M3"), "float8_e4m3fn");
  EXPECT_EQ(DtypeFromSafetensors("C64"), "complex64");
  EXPECT_EQ(DtypeFromSafetensors("F8_E8M0"), "float8_e8m0fnu");
  EXPECT_EQ(DtypeFromSafetensors("F4"), "float4_e2m1fn_x2");
  EXPECT_EQ(DtypeFromSafetensors("F6_E3M2"), "");  // no LibTorch dtype
  EXPECT_EQ(DtypeToSafetensors("float4_e2m1fn_x2"), "F4");
  EXPECT_EQ(DtypeToSafetensors("bits8"), "");
  EXPECT_EQ(SafetensorsShape("float4_e2m1fn_x2", {3, 4}, "k"), (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(SafetensorsShape("float8_e8m0fnu", {3, 4}, "k"), (std::vector<int64_t>{3, 4}));
  EXPECT_HAS(ErrorOf([] { SafetensorsShape("float4_e2m1fn_x2", {}, "k"); }), "key 'k' is a 0-d");
  EXPECT_EQ(DtypeToSafetensors("bfloat16"), "BF16");
  EXPECT_EQ(DtypeToSafetensors("complex128"), "");
}

}  // namespace
}  // namespace dcpp

namespace dcpp {
namespace {

// A file as HuggingFaceStorageWriter(save_distributed) writes one rank's: its shard of `w`
// with DCP's saved_offsets in __metadata__.
std::string DcpShard(const at::Tensor& shard, int64_t row, int64_t col) {
  const std::string sharding = "{\\\"w\\\": {\\\"saved_offsets\\\": [" + std::to_string(row) + ", " +
                               std::to_string(col) + "]}}";
  return Safetensors(R"({"__metadata__":{"DCP_SHARDING_INFO":")" + sharding +
                         R"(","DCP_VERSION":"1.0","format":"pt"},"w":{"dtype":"F32","shape":[)" +
                         std::to_string(shard.size(0)) + "," + std::to_string(shard.size(1)) +
                         R"(],"data_offsets":[0,)" + std::to_string(shard.nbytes()) + "]}}",
                     BytesOf(shard));
}

TEST(SafetensorsReader, DcpShardsInSeveralFilesAreChunks) {
  TempDir dir;
  const at::Tensor w = at::arange(35, at::kFloat).reshape({7, 5});
  // Uneven rows on "rank" 1 and 2, and the last column block on its own.
  WriteFile(dir / "shard-00001-model-00001-of-00001.safetensors", DcpShard(w.slice(0, 0, 4).slice(1, 0, 3), 0, 0));
  WriteFile(dir / "shard-00002-model-00001-of-00001.safetensors", DcpShard(w.slice(0, 4, 7).slice(1, 0, 3), 4, 0));
  WriteFile(dir / "shard-00003-model-00001-of-00001.safetensors", DcpShard(w.slice(1, 3, 5), 0, 3));
  SafetensorsReader reader(dir.path());
  const proto::Metadata md = ParseMetadata(reader.ReadMetadata(), dir.path());
  const proto::TensorMeta& t = Find(md, "w");
  ASSERT_EQ(t.shape_size(), 2);
  EXPECT_EQ(t.shape(0), 7);
  EXPECT_EQ(t.shape(1), 5);
  ASSERT_EQ(t.chunks_size(), 3);
  EXPECT_EQ(t.chunks(1).offsets(0), 4);
  EXPECT_EQ(t.chunks(2).offsets(1), 3);
  EXPECT_EQ(md.planner_data().count("safetensors.DCP_SHARDING_INFO"), 0u);
  EXPECT_TRUE(at::equal(LoadKey(reader, "w", w), w));
  EXPECT_TRUE(at::equal(LoadKey(reader, "w", w, Layout::Sharded(2, 1), 1), w.slice(1, 3, 5)));

  // Two shards at the same offsets, and a dtype that differs, are refused naming both files.
  WriteFile(dir / "shard-00004-model-00001-of-00001.safetensors", DcpShard(w.slice(1, 3, 5), 0, 3));
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader(dir.path()).ReadMetadata(); }),
             "tensor 'w' has a shard at the same offsets in shard-00003-model-00001-of-00001.safetensors and "
             "shard-00004-model-00001-of-00001.safetensors");
  std::filesystem::remove(dir / "shard-00004-model-00001-of-00001.safetensors");
  const at::Tensor d = w.slice(1, 3, 5).to(at::kDouble);
  WriteFile(dir / "shard-00004-model-00001-of-00001.safetensors",
            Safetensors(R"({"__metadata__":{"DCP_SHARDING_INFO":"{\"w\": {\"saved_offsets\": [7, 0]}}"},)"
                        R"("w":{"dtype":"F64","shape":[7,2],"data_offsets":[0,112]}})",
                        BytesOf(d)));
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader(dir.path()).ReadMetadata(); }),
             "tensor 'w' is in both shard-00001-model-00001-of-00001.safetensors and "
             "shard-00004-model-00001-of-00001.safetensors with different dtypes");
  // Malformed sharding info names the file.
  WriteFile(dir / "shard-00004-model-00001-of-00001.safetensors",
            Safetensors(R"({"__metadata__":{"DCP_SHARDING_INFO":"{\"w\": {\"saved_offsets\": [-1, 0]}}"},)"
                        R"("w":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}})",
                        std::string(4, '\0')));
  EXPECT_HAS(ErrorOf([&] { SafetensorsReader(dir.path()).ReadMetadata(); }),
             "shard-00004-model-00001-of-00001.safetensors: DCP_SHARDING_INFO of tensor 'w': saved_offsets [-1,0]");
}

}  // namespace
}  // namespace dcpp
