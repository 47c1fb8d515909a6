// ExportSafetensors(): checkpoints saved by save() in several ranks' layouts, exported in
// shards and read back through SafetensorsReader + load(); the files follow the safetensors
// library's rules; bounded memory; bytes entries skipped; failures leave DST as it was.
#include "core/tools/safetensors_export.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/storage/safetensors/safetensors.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;
namespace fs = std::filesystem;

struct Key {
  std::string fqn;
  at::Tensor full;
  Layout layout;
};

// Saves `keys` as every rank of their layouts would, from one process.
void SaveAllRanks(const std::vector<Key>& keys, const std::string& dir,
                  const std::map<std::string, std::string>& blobs = {}) {
  StateDict sd;
  for (const Key& k : keys) {
    for (int64_t r = 0; r < k.layout.world_size(); ++r) sd.AddSharded(k.fqn, k.full, k.layout, r);
  }
  for (const auto& [k, v] : blobs) sd.AddBytes(k, v);
  save(sd, dir);
}

// Several dtypes and layouts: FSDP rows, TP columns (staged), a 2-D mesh, replicated, 0-d,
// empty.
std::vector<Key> Mixed() {
  at::manual_seed(1);
  const Layout mesh2d{{2, 2}, {Placement::Shard(0), Placement::Shard(1)}};
  return {
      {"layers.0.weight", at::rand({64, 32}), Layout::Sharded(4, 0)},
      {"layers.0.bias", at::rand({64}).to(at::kBFloat16), Layout::Sharded(3, 0)},
      {"layers.1.weight", at::rand({48, 40}).to(at::kBFloat16), Layout::Sharded(2, 1)},
      {"layers.1.ids", at::randint(-1000, 1000, {10, 3}, at::kInt), mesh2d},
      {"embed.table", at::randint(0, 1 << 30, {37, 5}, at::kLong), Layout::Replicated(2)},
      {"step", at::scalar_tensor(17.0, at::kDouble), Layout::Replicated(2)},
      {"mask", at::rand({33}) > 0.5, Layout::Sharded(2, 0)},
      {"tokens", at::randint(0, 255, {300}, at::kByte), Layout::Sharded(4, 0)},
      {"empty", at::zeros({0, 5}), Layout::Sharded(2, 1)},
  };
}

int64_t Bytes(const at::Tensor& t) { return static_cast<int64_t>(t.nbytes()); }

at::Tensor LoadWhole(StorageReader& reader, const Key& k) {
  StateDict sd;
  sd.AddUnallocated(k.fqn, k.full.scalar_type(), k.full.sizes().vec(), Layout::Replicated(1), 0);
  load(sd, reader);
  return sd.FindTensor(k.fqn)->chunks.at(0).tensor;
}

// Checks the rules the safetensors library reads by: header length a multiple of 8 (padded
// with spaces), data offsets contiguous from 0 and covering the data area exactly, each tensor
// aligned to its element size in the file. Returns the header.
nlohmann::json CheckShardFile(const std::string& path) {
  const std::string bytes = ReadFile(path);
  EXPECT_GE(bytes.size(), 8u) << path;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u) << path;
  const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, v] : h.items()) {
    if (name == "__metadata__") continue;
    const uint64_t b = v["data_offsets"][0], e = v["data_offsets"][1];
    ranges.emplace_back(b, e);
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t pos = 0;
  for (const auto& [b, e] : ranges) {
    EXPECT_EQ(b, pos) << path << ": a hole or an overlap in the data";
    pos = e;
  }
  EXPECT_EQ(8 + n + pos, bytes.size()) << path << ": the data does not cover the file";
  return h;
}

TEST(SafetensorsExport, ShardsAndValues) {
  TempDir dir;
  const std::vector<Key> keys = Mixed();
  SaveAllRanks(keys, dir / "ckpt", {{"rng", "state"}, {"config", "{}"}});
  SafetensorsExportOptions opt;
  opt.max_shard_bytes = 4000;
  int64_t last_done = -1, last_total = -1;
  opt.progress = [&](int64_t done, int64_t total) {
    EXPECT_GT(done, last_done);
    last_done = done;
    last_total = total;
  };
  FileSystemReader src(dir / "ckpt");
  const SafetensorsExportStats st = ExportSafetensors(src, dir / "st", opt);

  int64_t total = 0;
  for (const Key& k : keys) total += Bytes(k.full);
  EXPECT_EQ(st.total_size, total);
  EXPECT_EQ(last_done, total);
  EXPECT_EQ(last_total, total);
  EXPECT_EQ(st.tensors, static_cast<int64_t>(keys.size()));
  EXPECT_EQ(st.skipped_bytes, (std::vector<std::string>{"config", "rng"}));
  EXPECT_TRUE(st.checksums_verified);
  EXPECT_GT(st.chunks_verified, static_cast<int64_t>(keys.size()));
  ASSERT_GE(st.files.size(), 3u);
  const int n = static_cast<int>(st.files.size());
  for (int i = 0; i < n; ++i) EXPECT_EQ(st.files[i], SafetensorsShardName(i + 1, n));
  EXPECT_EQ(st.files[0], "model-00001-of-0000" + std::to_string(n) + ".safetensors");

  // The folder: the shards and the index, nothing else.
  std::vector<std::string> listed;
  for (const auto& e : fs::directory_iterator(dir / "st")) listed.push_back(e.path().filename().string());
  std::sort(listed.begin(), listed.end());
  std::vector<std::string> want = st.files;
  want.push_back("model.safetensors.index.json");
  EXPECT_EQ(listed, want);

  const nlohmann::json index = nlohmann::json::parse(ReadFile(dir / "st/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], total);
  ASSERT_EQ(index["weight_map"].size(), keys.size());
  // Key order across shards, each shard within the cap unless it holds one tensor.
  std::map<std::string, int64_t> shard_bytes;
  std::map<std::string, int> shard_count;
  std::string previous_file;
  std::map<std::string, std::string> sorted;
  for (const Key& k : keys) sorted[k.fqn] = index["weight_map"][k.fqn];
  for (const auto& [fqn, file] : sorted) {
    EXPECT_GE(file, previous_file) << fqn;
    previous_file = file;
  }
  for (const Key& k : keys) {
    const std::string file = index["weight_map"][k.fqn];
    shard_bytes[file] += Bytes(k.full);
    shard_count[file] += 1;
  }
  for (const auto& [file, bytes] : shard_bytes) {
    EXPECT_TRUE(bytes <= opt.max_shard_bytes || shard_count[file] == 1) << file;
  }
  for (const std::string& f : st.files) {
    const nlohmann::json h = CheckShardFile(dir / ("st/" + f));
    EXPECT_EQ(h["__metadata__"]["format"], "pt");
  }

  // Values, through the index and through each shard file alone.
  SafetensorsReader reader(dir / "st");
  for (const Key& k : keys) {
    EXPECT_TRUE(at::equal(LoadWhole(reader, k), k.full)) << k.fqn;
    SafetensorsReader one(dir / ("st/" + index["weight_map"][k.fqn].get<std::string>()));
    EXPECT_TRUE(at::equal(LoadWhole(one, k), k.full)) << k.fqn;
  }
  const proto::Metadata md = ParseMetadata(reader.ReadMetadata(), reader.Describe());
  for (const auto& t : md.tensors()) {
    const int64_t es = static_cast<int64_t>(t.chunks(0).length()) / std::max<int64_t>(1, ChunkBox(t.chunks(0)).numel());
    if (es > 0) {
      EXPECT_EQ(t.chunks(0).offset() % static_cast<uint64_t>(es), 0u) << t.fqn() << " is not aligned";
    }
  }
}

TEST(SafetensorsExport, BoundedMemory) {
  TempDir dir;
  at::manual_seed(2);
  const std::vector<Key> keys = {
      {"fsdp", at::rand({1024, 512}), Layout::Sharded(4, 0)},                   // 2 MiB
      {"tp", at::rand({512, 1024}).to(at::kBFloat16), Layout::Sharded(2, 1)},  // 1 MiB, staged
      {"flat", at::randint(0, 1 << 20, {1 << 20}, at::kInt), Layout::Sharded(3, 0)},  // 4 MiB
  };
  SaveAllRanks(keys, dir / "ckpt");
  SafetensorsExportOptions opt;
  opt.memory_budget = 64 << 10;
  opt.max_shard_bytes = 5 << 19;  // 2.5 MiB: flat alone (larger), fsdp, tp
  FileSystemReader src(dir / "ckpt");
  const SafetensorsExportStats st = ExportSafetensors(src, dir / "st", opt);
  EXPECT_GT(st.peak_buffer_bytes, 0);
  EXPECT_LE(st.peak_buffer_bytes, opt.memory_budget);
  EXPECT_EQ(st.files.size(), 3u);
  SafetensorsReader reader(dir / "st");
  for (const Key& k : keys) EXPECT_TRUE(at::equal(LoadWhole(reader, k), k.full)) << k.fqn;

  // A row too large for the budget is an error naming the key, and nothing is left behind.
  opt.memory_budget = 1000;
  EXPECT_HAS(ErrorOf([&] { ExportSafetensors(src, dir / "small", opt); }),
             "key 'fsdp': one row of dimension 0 needs 2048 bytes of buffers, more than the memory budget (1000 bytes)");
  EXPECT_FALSE(fs::exists(dir / "small"));
}

// --dtype bf16 with norms kept: an fp32 training checkpoint as a bf16 export, streaming in
// bounded memory; values as Tensor.to() makes them; integers untouched.
TEST(SafetensorsExport, CastsPerKeyPattern) {
  TempDir dir;
  at::manual_seed(4);
  const std::vector<Key> keys = {
      {"fsdp", at::randn({256, 64}), Layout::Sharded(4, 0)},
      {"tp", at::randn({64, 96}), Layout::Sharded(2, 1)},  // staged
      {"flat", at::randn({10001}, at::kDouble), Layout::Sharded(3, 0)},
      {"model.norm.weight", at::randn({64}), Layout::Replicated(2)},
      {"step", at::scalar_tensor(17.5, at::kDouble), Layout::Replicated(2)},
      {"ids", at::randint(0, 1000, {10, 3}, at::kInt), Layout::Sharded(2, 0)},
  };
  SaveAllRanks(keys, dir / "ckpt");
  SafetensorsExportOptions opt;
  opt.memory_budget = 16 << 10;
  opt.dtype_casts = {"bf16", "*norm*=keep"};
  FileSystemReader src(dir / "ckpt");
  const SafetensorsExportStats st = ExportSafetensors(src, dir / "st", opt);
  EXPECT_LE(st.peak_buffer_bytes, opt.memory_budget);
  EXPECT_EQ(st.tensors_cast, 4);
  const nlohmann::json h = CheckShardFile((dir / "st") + "/" + st.files.at(0));
  SafetensorsReader reader(dir / "st");
  for (const Key& k : keys) {
    const bool kept = k.fqn == "ids" || k.fqn == "model.norm.weight";
    EXPECT_EQ(h[k.fqn]["dtype"], kept ? (k.fqn == "ids" ? "I32" : "F32") : "BF16") << k.fqn;
    const at::Tensor want = kept ? k.full : k.full.to(at::kBFloat16);
    EXPECT_TRUE(at::equal(LoadWhole(reader, {k.fqn, want, k.layout}), want)) << k.fqn;
  }
  EXPECT_EQ(st.total_size, (256 * 64 + 64 * 96 + 10001 + 1) * 2 + 64 * 4 + 30 * 4);
}

TEST(SafetensorsExport, FailureLeavesDestinationAsItWas) {
  TempDir dir;
  const std::vector<Key> keys = Mixed();
  SaveAllRanks(keys, dir / "ckpt");
  SafetensorsExportOptions opt;
  opt.max_shard_bytes = 4000;
  FileSystemReader src(dir / "ckpt");
  ExportSafetensors(src, dir / "st", opt);
  auto snapshot = [&](const std::string& d) {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::directory_iterator(d)) files[e.path().filename().string()] = ReadFile(e.path().string());
    return files;
  };
  const auto before = snapshot(dir / "st");

  // Refused without overwrite.
  EXPECT_HAS(ErrorOf([&] { ExportSafetensors(src, dir / "st", opt); }),
             "already holds a safetensors checkpoint (model-00001-of-");
  EXPECT_EQ(snapshot(dir / "st"), before);

  // A corrupt chunk in the last tensor written (by key order): a checksum error, and neither a
  // new folder nor an existing one keeps anything of the failed export.
  const proto::Metadata md = ParseMetadata(src.ReadMetadata(), src.Describe());
  const proto::ChunkMeta* victim = nullptr;
  for (const auto& t : md.tensors()) {
    if (t.fqn() == "tokens") victim = &t.chunks(0);
  }
  ASSERT_NE(victim, nullptr);
  const std::string data = dir / ("ckpt/" + victim->file());
  std::string bytes = ReadFile(data);
  bytes[victim->offset() + 1] ^= 0x20;
  WriteFile(data, bytes);
  opt.overwrite = true;
  EXPECT_HAS(ErrorOf([&] { ExportSafetensors(src, dir / "fresh", opt); }), "checksum mismatch for key 'tokens'");
  EXPECT_FALSE(fs::exists(dir / "fresh"));
  EXPECT_HAS(ErrorOf([&] { ExportSafetensors(src, dir / "st", opt); }), "checksum mismatch for key 'tokens'");
  EXPECT_EQ(snapshot(dir / "st"), before);

  // Without verification it goes through; with overwrite, into the old folder, whose shards
  // that the new export does not reuse are removed.
  opt.verify_checksums = false;
  opt.max_shard_bytes = int64_t{1} << 40;
  const SafetensorsExportStats st = ExportSafetensors(src, dir / "st", opt);
  EXPECT_FALSE(st.checksums_verified);
  EXPECT_EQ(st.files, (std::vector<std::string>{"model-00001-of-00001.safetensors"}));
  const auto after = snapshot(dir / "st");
  EXPECT_EQ(after.size(), 2u);
  EXPECT_TRUE(after.count("model-00001-of-00001.safetensors"));
}

TEST(SafetensorsExport, RefusesWhatSafetensorsCannotHold) {
  TempDir dir;
  SaveAllRanks({{"ok", at::rand({4}), Layout::Replicated(1)},
                {"z", at::rand({3}, at::kComplexDouble), Layout::Replicated(1)}},
               dir / "ckpt");
  FileSystemReader src(dir / "ckpt");
  EXPECT_HAS(ErrorOf([&] { ExportSafetensors(src, dir / "st"); }),
             "key 'z' has dtype complex128, which safetensors cannot hold");
  EXPECT_FALSE(fs::exists(dir / "st"));
  SafetensorsExportOptions opt;
  opt.max_shard_bytes = 0;
  EXPECT_HAS(ErrorOf([&] { ExportSafetensors(src, dir / "st", opt); }), "max_shard_bytes must be positive");
}

// MX/NVFP4 checkpoints: float4_e2m1fn_x2 goes out as F4 with its last dimension counting 4-bit
// values (as safetensors' torch binding writes it), float8_e8m0fnu as F8_E8M0; both read back
// bit for bit. A 0-d float4_e2m1fn_x2 has no F4 shape and is refused by key.
TEST(SafetensorsExport, Nvfp4AndMxScales) {
  TempDir dir;
  const at::Tensor packed = at::randint(0, 256, {8, 6}, at::kByte).view(at::kFloat4_e2m1fn_x2);
  const at::Tensor scales = at::randint(0, 256, {8, 3}, at::kByte).view(at::kFloat8_e8m0fnu);
  const std::vector<Key> keys = {{"w.qdata", packed, Layout::Sharded(2, 1)},
                                 {"w.scale", scales, Layout::Sharded(2, 0)}};
  SaveAllRanks(keys, dir / "ckpt");
  FileSystemReader src(dir / "ckpt");
  const SafetensorsExportStats st = ExportSafetensors(src, dir / "st");
  ASSERT_EQ(st.files.size(), 1u);
  const nlohmann::json h = CheckShardFile(dir / ("st/" + st.files[0]));
  EXPECT_EQ(h["w.qdata"]["dtype"], "F4");
  EXPECT_EQ(h["w.qdata"]["shape"], nlohmann::json::array({8, 12}));
  EXPECT_EQ(h["w.scale"]["dtype"], "F8_E8M0");
  EXPECT_EQ(h["w.scale"]["shape"], nlohmann::json::array({8, 3}));
  SafetensorsReader back(dir / "st");
  for (const Key& k : keys) {
    const at::Tensor got = LoadWhole(back, k);
    ASSERT_EQ(got.scalar_type(), k.full.scalar_type()) << k.fqn;
    EXPECT_TRUE(at::equal(got.view(at::kByte), k.full.view(at::kByte))) << k.fqn;
  }

  SaveAllRanks({{"s", at::zeros({}, at::kByte).view(at::kFloat4_e2m1fn_x2), Layout::Replicated(1)}},
               dir / "zero_d");
  FileSystemReader zero_d(dir / "zero_d");
  EXPECT_HAS(ErrorOf([&] { ExportSafetensors(zero_d, dir / "st0"); }),
             "key 's' is a 0-d float4_e2m1fn_x2 tensor, which safetensors' F4 cannot hold");
}

TEST(SafetensorsExport, FromSafetensorsKeepsItsMetadata) {
  TempDir dir;
  // A hand-made file with its own __metadata__, exported, then the export exported again.
  const at::Tensor a = at::arange(6, at::kHalf).reshape({2, 3});
  const at::Tensor b = at::arange(4, at::kShort);
  std::string header = R"({"__metadata__":{"origin":"hand"},)"
                       R"("b":{"dtype":"I16","shape":[4],"data_offsets":[0,8]},)"
                       R"("a":{"dtype":"F16","shape":[2,3],"data_offsets":[8,20]}})";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  file += header + std::string(static_cast<const char*>(b.data_ptr()), 8) +
          std::string(static_cast<const char*>(a.data_ptr()), 12);
  WriteFile(dir / "in.safetensors", file);
  SafetensorsReader in(dir / "in.safetensors");
  const SafetensorsExportStats st = ExportSafetensors(in, dir / "st1");
  EXPECT_FALSE(st.checksums_verified);  // safetensors records none
  const nlohmann::json h = CheckShardFile(dir / "st1/model-00001-of-00001.safetensors");
  EXPECT_EQ(h["__metadata__"], (nlohmann::json{{"format", "pt"}, {"origin", "hand"}}));
  SafetensorsReader first(dir / "st1");
  EXPECT_TRUE(at::equal(LoadWhole(first, {"a", a, Layout::Replicated(1)}), a));
  EXPECT_TRUE(at::equal(LoadWhole(first, {"b", b, Layout::Replicated(1)}), b));
  ExportSafetensors(first, dir / "st2");
  EXPECT_EQ(ReadFile(dir / "st1/model-00001-of-00001.safetensors"),
            ReadFile(dir / "st2/model-00001-of-00001.safetensors"));
}

}  // namespace
}  // namespace dcpp
