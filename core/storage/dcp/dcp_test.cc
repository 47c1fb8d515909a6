// PyTorch DCP's format written and read by dcpp alone: round trips of every dtype, layouts
// and blobs, resharding on load, conversions into and out of it, and bad input. The same
// files against real PyTorch are in tests/interop/.
#include "core/storage/dcp/dcp.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>

#include "core/dcpp.h"
#include "core/engine/async_save.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/open.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"
#include "core/tools/convert.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

const std::vector<c10::ScalarType> kDtypes = {
    at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort,
    at::kChar, at::kByte, at::kBool, at::kComplexFloat, at::kComplexDouble,
    at::kFloat8_e4m3fn, at::kFloat8_e5m2, at::kUInt16, at::kUInt32, at::kUInt64};

at::Tensor Values(at::IntArrayRef shape, c10::ScalarType dtype, int seed) {
  const at::Tensor v = at::arange(c10::multiply_integers(shape), at::kDouble).add(seed).remainder(97).div(4);
  if (dtype == at::kBool) return v.gt(10).reshape(shape);
  if (at::isComplexType(dtype)) return at::complex(v, v.neg()).to(dtype).reshape(shape);
  return v.to(dtype).reshape(shape);
}

bool Same(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  // Compare bytes: float8 and unsigned types have few ops.
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return x.numel() == 0 ||
         std::memcmp(x.const_data_ptr(), y.const_data_ptr(), static_cast<size_t>(x.nbytes())) == 0;
}

// Every dtype, sharded over two "ranks" (two chunks), a non-contiguous source, a 0-d and an
// empty tensor, and a raw blob.
StateDict Sample() {
  StateDict sd;
  int seed = 0;
  for (c10::ScalarType dtype : kDtypes) {
    sd.AddSharded(std::string("t.") + c10::toString(dtype), Values({6, 5}, dtype, seed++),
                  Layout::Sharded(2, 0), 0);
    sd.AddSharded(std::string("t.") + c10::toString(dtype), Values({6, 5}, dtype, seed - 1),
                  Layout::Sharded(2, 0), 1);
  }
  sd.AddTensor("transposed", Values({4, 7}, at::kFloat, 3).t());
  sd.AddTensor("scalar", at::scalar_tensor(42, at::kLong));
  sd.AddTensor("empty", at::zeros({0, 3}));
  sd.AddBytes("blob", std::string("raw\0bytes\xff", 10));
  return sd;
}

StateDict Targets(const StateDict& like) {
  StateDict sd;
  for (const TensorEntry& e : like.tensors()) {
    sd.AddUnallocated(e.fqn, e.dtype, e.shape, Layout::Replicated(1), 0);
  }
  for (const BytesEntry& b : like.bytes()) sd.AddBytes(b.fqn, "");
  return sd;
}

at::Tensor Full(const StateDict& sd, const std::string& fqn) {
  const TensorEntry* e = sd.FindTensor(fqn);
  at::Tensor full = at::empty(e->shape, at::TensorOptions().dtype(e->dtype));
  for (const LocalChunk& c : e->chunks) {
    at::Tensor view = full;
    for (size_t d = 0; d < c.box.sizes.size(); ++d) view = view.narrow(d, c.box.offsets[d], c.box.sizes[d]);
    view.copy_(c.tensor);
  }
  return full;
}

TEST(Dcp, RoundTripEveryDtypeLayoutAndBlob) {
  TempDir dir;
  const StateDict saved = Sample();
  save(saved, DcpWriter(dir.path()));
  ASSERT_TRUE(IsDcpMetadata(ReadFile(dir.path() + "/.metadata")));

  StateDict loaded = Targets(saved);
  const LoadStats st = load(loaded, DcpReader(dir.path()));
  EXPECT_EQ(st.checksums_verified, 0);  // DCP records none
  for (const TensorEntry& e : saved.tensors()) {
    EXPECT_TRUE(Same(Full(saved, e.fqn), loaded.FindTensor(e.fqn)->chunks[0].tensor)) << e.fqn;
  }
  // The blob is stored as a Python bytes object and comes back as its torch.save archive.
  const std::string& archive = loaded.FindBytes("blob")->data;
  const pickle::ValuePtr v = torch_archive::DecodeObject(archive, "blob");
  ASSERT_TRUE(v->Is(pickle::Value::Kind::kBytes)) << pickle::Repr(*v);
  EXPECT_EQ(v->str, saved.FindBytes("blob")->data);
}

TEST(Dcp, MetadataDescribesChunksAsPyTorchDoes) {
  TempDir dir;
  save(Sample(), DcpWriter(dir.path()));
  const proto::Metadata md = ParseMetadata(DcpReader(dir.path()).ReadMetadata(), dir.path());
  EXPECT_EQ(md.checksum_algorithm(), kNoChecksum);
  EXPECT_EQ(md.planner_data().at("dcp.version"), kDcpVersion);
  // Every item is a torch.save archive: chunk data lies inside it.
  const proto::TensorMeta* t = nullptr;
  for (const auto& x : md.tensors()) {
    if (x.fqn() == "t.Float") t = &x;
  }
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->chunks_size(), 2);
  EXPECT_EQ(t->chunks(1).offsets(0), 3);
  FileSystemReader files(dir.path());
  auto src = files.Open(t->chunks(0).file());
  // The archive's zip directory names the storage entry holding exactly these bytes.
  const std::string pickled = ReadFile(dir.path() + "/.metadata");
  EXPECT_NE(pickled.find("torch.distributed.checkpoint.metadata"), std::string::npos);
  EXPECT_NE(pickled.find("_StorageInfo"), std::string::npos);
}

TEST(Dcp, ReshardsOnLoad) {
  TempDir dir;
  StateDict saved;
  const at::Tensor w = Values({12, 10}, at::kFloat, 1);
  for (int r = 0; r < 4; ++r) saved.AddSharded("w", w, Layout::Sharded(4, 0), r);
  save(saved, DcpWriter(dir.path()));
  for (int r = 0; r < 3; ++r) {
    StateDict target;
    target.AddUnallocated("w", at::kFloat, {12, 10}, Layout::Sharded(3, 1), r);
    load(target, DcpReader(dir.path()));
    const LocalChunk& c = target.FindTensor("w")->chunks[0];
    EXPECT_TRUE(at::equal(c.tensor, w.narrow(1, c.box.offsets[1], c.box.sizes[1]))) << r;
  }
}

TEST(Dcp, ConvertsNativeToDcpAndBack) {
  TempDir native, dcp, back;
  const StateDict saved = Sample();
  save(saved, native.path());
  ConvertOptions to_dcp;
  to_dcp.world_size = 3;
  FileSystemReader native_reader(native.path());
  DcpWriter dcp_writer(dcp.path());
  convert(native_reader, dcp_writer, to_dcp);
  ASSERT_TRUE(IsDcpMetadata(ReadFile(dcp.path() + "/.metadata")));
  DcpReader dcp_reader(dcp.path());
  FileSystemWriter back_writer(back.path());
  convert(dcp_reader, back_writer, ConvertOptions{});
  for (const std::string& path : {dcp.path(), back.path()}) {
    StateDict loaded = Targets(saved);
    if (path == dcp.path()) {
      load(loaded, DcpReader(path));
    } else {
      load(loaded, path);
    }
    for (const TensorEntry& e : saved.tensors()) {
      EXPECT_TRUE(Same(Full(saved, e.fqn), loaded.FindTensor(e.fqn)->chunks[0].tensor)) << path << " " << e.fqn;
    }
    const pickle::ValuePtr v = torch_archive::DecodeObject(loaded.FindBytes("blob")->data, "blob");
    EXPECT_EQ(v->str, saved.FindBytes("blob")->data) << path;
  }
}

TEST(Dcp, AsyncSaveAndPathOverloadsWriteIt) {
  TempDir dir, conv;
  StateDict sd;
  at::Tensor w = Values({8, 4}, at::kFloat, 2);
  sd.AddTensor("w", w);
  SaveOptions so;
  so.format = Format::kDcp;
  AsyncSaver saver;
  PendingSave pending = saver.Save(sd, dir.path(), so);
  w.add_(1);  // after the snapshot: not in the checkpoint
  pending.wait();
  ASSERT_TRUE(IsDcpMetadata(ReadFile(dir.path() + "/.metadata")));
  StateDict t;
  t.AddUnallocated("w", at::kFloat, {8, 4}, Layout::Replicated(1), 0);
  load(t, dir.path());  // detects the format
  EXPECT_TRUE(at::equal(t.FindTensor("w")->chunks[0].tensor, Values({8, 4}, at::kFloat, 2)));

  ConvertOptions co;
  co.format = Format::kDcp;
  co.world_size = 2;
  co.overwrite = true;
  convert(dir.path(), conv.path(), co);
  StateDict u;
  u.AddUnallocated("w", at::kFloat, {8, 4}, Layout::Replicated(1), 0);
  load(u, conv.path());
  EXPECT_TRUE(at::equal(u.FindTensor("w")->chunks[0].tensor, Values({8, 4}, at::kFloat, 2)));
}

TEST(Dcp, SavingOverACheckpointReplacesItAfterCommit) {
  TempDir dir;
  save(Sample(), DcpWriter(dir.path()));
  const auto files_before = DcpFiles(ReadFile(dir.path() + "/.metadata"), dir.path());
  StateDict second;
  second.AddTensor("only", Values({3, 3}, at::kFloat, 9));
  save(second, DcpWriter(dir.path()));
  const auto files_after = DcpFiles(ReadFile(dir.path() + "/.metadata"), dir.path());
  for (const std::string& f : files_before) {
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/" + f)) << f;
    for (const std::string& g : files_after) EXPECT_NE(f, g);
  }
  StateDict t;
  t.AddUnallocated("only", at::kFloat, {3, 3}, Layout::Replicated(1), 0);
  load(t, DcpReader(dir.path()));
  EXPECT_TRUE(at::equal(t.FindTensor("only")->chunks[0].tensor, Values({3, 3}, at::kFloat, 9)));
}

// A .metadata pickle whose root calls os.system: decoding refuses the global and runs nothing.
TEST(Dcp, RefusesGlobalsOutsideTheAllowList) {
  TempDir dir;
  save(Sample(), DcpWriter(dir.path()));
  const std::string marker = dir.path() + "/pwned";
  pickle::Writer w(2);
  w.Global("os", "system").Str("touch " + marker).Tuple(1).Reduce();
  WriteFile(dir.path() + "/.metadata", w.Finish());
  StateDict t = Targets(Sample());
  const std::string err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, "os.system");
  EXPECT_HAS(err, ".metadata");
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(Dcp, RefusesTruncatedMetadataAndUnknownVersion) {
  TempDir dir;
  save(Sample(), DcpWriter(dir.path()));
  const std::string md = ReadFile(dir.path() + "/.metadata");
  StateDict t = Targets(Sample());

  WriteFile(dir.path() + "/.metadata", md.substr(0, md.size() / 2));
  EXPECT_HAS(ErrorOf([&] { load(t, DcpReader(dir.path())); }), "truncated");

  std::string v2 = md;
  const size_t at = v2.rfind(kDcpVersion);
  ASSERT_NE(at, std::string::npos);
  v2.replace(at, 5, "7.0.0");
  WriteFile(dir.path() + "/.metadata", v2);
  const std::string err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, "version '7.0.0'");
}

TEST(Dcp, NamesTheKeyAndFileOfABrokenItem) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", Values({64, 64}, at::kFloat, 0));
  save(sd, DcpWriter(dir.path()));
  const proto::Metadata md = ParseMetadata(DcpReader(dir.path()).ReadMetadata(), dir.path());
  const std::string file = md.tensors(0).chunks(0).file();
  const std::string data = ReadFile(dir.path() + "/" + file);
  StateDict t;
  t.AddUnallocated("w", at::kFloat, {64, 64}, Layout::Replicated(1), 0);

  // Truncated: the item's zip directory is gone.
  WriteFile(dir.path() + "/" + file, data.substr(0, data.size() - 100));
  std::string err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, file);
  EXPECT_HAS(err, "'w'");
  EXPECT_HAS(err, "truncated");

  // Not an archive at all.
  std::string garbage(data.size(), 'x');
  WriteFile(dir.path() + "/" + file, garbage);
  err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
  EXPECT_HAS(err, file);
  EXPECT_HAS(err, "not a zip archive");
}

// Rewrites every object of class `cls` in the tree (a pickle may share values: each once).
void ForEachObject(const pickle::ValuePtr& v, const std::function<void(pickle::Value&)>& fn,
                   std::set<const pickle::Value*>& seen) {
  if (!v || !seen.insert(v.get()).second) return;
  if (v->Is(pickle::Value::Kind::kObject)) fn(*v);
  for (const auto& x : v->items) ForEachObject(x, fn, seen);
  for (const auto& [k, x] : v->dict) {
    ForEachObject(k, fn, seen);
    ForEachObject(x, fn, seen);
  }
  ForEachObject(v->args, fn, seen);
  ForEachObject(v->state, fn, seen);
}

void RemoveKey(pickle::Value& dict, const std::string& key) {
  auto& d = dict.dict;
  d.erase(std::remove_if(d.begin(), d.end(), [&](const auto& kv) { return kv.first->str == key; }), d.end());
}

// What PyTorch 2.3 to 2.11 have written: TensorProperties under its older module, no version
// and no storage_meta (2.3), checkpoint_id as a pathlib._local path (Python 3.13), and
// _StorageInfo with an empty list of transform descriptors (2.7+).
TEST(Dcp, AcceptsTheMetadataVariantsPyTorchHasWrittenSince23) {
  TempDir dir;
  const StateDict saved = Sample();
  save(saved, DcpWriter(dir.path()));
  const std::string md_path = dir.path() + "/.metadata";
  const auto allow_all = [](const std::string&, const std::string&) { return true; };
  using pickle::Value;

  const std::string original = ReadFile(md_path);
  const std::vector<std::string> variants = {"old-module", "unversioned", "pathlib-local", "transforms"};
  for (const std::string& variant : variants) {
    const pickle::ValuePtr root = pickle::Decode(original, allow_all, md_path);
    std::set<const Value*> seen;
    ForEachObject(root, [&](Value& o) {
      if (variant == "old-module" && o.IsObjectOf("torch.distributed.checkpoint.metadata", "TensorProperties")) {
        o.cls = Value::Global("torch.distributed._shard.sharded_tensor.metadata", "TensorProperties");
        o.state->items[3]->cls = Value::Global("torch.distributed._shard.sharded_tensor.metadata", "MEM_FORMAT_ENCODING");
      }
      if (variant == "transforms" && o.IsObjectOf("torch.distributed.checkpoint.filesystem", "_StorageInfo")) {
        o.state->dict.push_back({Value::Str("transform_descriptors"), Value::List({})});
      }
    }, seen);
    if (variant == "unversioned") {
      RemoveKey(*root->state, "version");
      RemoveKey(*root->state, "storage_meta");
    }
    if (variant == "pathlib-local") {
      const pickle::ValuePtr meta = root->Attr("storage_meta");
      ASSERT_NE(meta, nullptr);
      auto path = std::make_shared<Value>();
      path->kind = Value::Kind::kObject;
      path->cls = Value::Global("pathlib._local", "PosixPath");
      path->args = Value::Tuple({Value::Str("/"), Value::Str("tmp"), Value::Str("ckpt")});
      RemoveKey(*meta->state, "checkpoint_id");
      meta->state->dict.push_back({Value::Str("checkpoint_id"), path});
    }
    pickle::Writer w(2);
    WriteFile(md_path, w.Put(*root).Finish());
    StateDict loaded = Targets(saved);
    load(loaded, DcpReader(dir.path()));
    for (const TensorEntry& e : saved.tensors()) {
      EXPECT_TRUE(Same(Full(saved, e.fqn), loaded.FindTensor(e.fqn)->chunks[0].tensor)) << variant << " " << e.fqn;
    }
  }
  // A transform (e.g. compression) is refused by name.
  const pickle::ValuePtr root = pickle::Decode(original, allow_all, md_path);
  std::set<const Value*> seen;
  ForEachObject(root, [&](Value& o) {
    if (o.IsObjectOf("torch.distributed.checkpoint.filesystem", "_StorageInfo")) {
      RemoveKey(*o.state, "transform_descriptors");
      o.state->dict.push_back({Value::Str("transform_descriptors"), Value::List({Value::Str("zstd")})});
    }
  }, seen);
  pickle::Writer w(2);
  WriteFile(md_path, w.Put(*root).Finish());
  StateDict t = Targets(saved);
  EXPECT_HAS(ErrorOf([&] { load(t, DcpReader(dir.path())); }), "stream transforms ['zstd']");
}

// DCP's planner_data maps each key to the path it was flattened from; PyTorch's tools that
// rebuild the nesting (dcp_to_torch_save) rely on it.
TEST(Dcp, KeyPathsAreKeptFromTheSourceOrWholeKeys) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("net1.weight", Values({2, 2}, at::kFloat, 0));
  sd.AddTensor("optim.param_groups.0.lr", at::scalar_tensor(0.1));
  proto::Metadata md;
  {
    save(sd, DcpWriter(dir.path()));
    md = ParseMetadata(DcpReader(dir.path()).ReadMetadata(), dir.path());
  }
  // Written by dcpp without a source: every key is one component.
  EXPECT_EQ(md.planner_data().at(kDcpPaths),
            R"({"net1.weight":["net1.weight"],"optim.param_groups.0.lr":["optim.param_groups.0.lr"]})");
  // With paths from a source (and one stale entry, for a key that was renamed since).
  (*md.mutable_planner_data())[kDcpPaths] =
      R"({"optim.param_groups.0.lr":["optim","param_groups",0,"lr"],"net1.weight":["net9","weight"]})";
  const auto allow_all = [](const std::string&, const std::string&) { return true; };
  const pickle::ValuePtr root = pickle::Decode(WriteDcpMetadata(md, dir.path()), allow_all, "md");
  const pickle::ValuePtr paths = root->Attr("planner_data");
  ASSERT_NE(paths, nullptr);
  EXPECT_EQ(pickle::Repr(*paths->Get("optim.param_groups.0.lr")), "('optim', 'param_groups', 0, 'lr')");
  EXPECT_EQ(pickle::Repr(*paths->Get("net1.weight")), "('net1.weight',)");
}

TEST(Dcp, ArchiveCrcsCatchCorruptData) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", Values({64, 64}, at::kFloat, 0));
  sd.AddBytes("blob", "payload");
  save(sd, DcpWriter(dir.path()));
  DcpArchiveCheck ok = CheckDcpArchives(dir.path());
  EXPECT_TRUE(ok.problems.empty()) << ok.problems[0];
  EXPECT_EQ(ok.items, 2);
  EXPECT_GE(ok.bytes, 64 * 64 * 4);

  const proto::Metadata md = ParseMetadata(DcpReader(dir.path()).ReadMetadata(), dir.path());
  const proto::ChunkMeta& c = md.tensors(0).chunks(0);
  std::string data = ReadFile(dir.path() + "/" + c.file());
  data[c.offset() + 100] ^= 0x40;
  WriteFile(dir.path() + "/" + c.file(), data);
  const DcpArchiveCheck bad = CheckDcpArchives(dir.path());
  ASSERT_EQ(bad.problems.size(), 1u);
  EXPECT_HAS(bad.problems[0], "key 'w'");
  EXPECT_HAS(bad.problems[0], c.file());
  EXPECT_HAS(bad.problems[0], "CRC-32");
}

// Flips bit 6 of byte `at` of `path`.
void FlipByte(const std::string& path, uint64_t at) {
  std::string data = ReadFile(path);
  ASSERT_LT(at, data.size());
  data[at] ^= 0x40;
  WriteFile(path, data);
}

TEST(Dcp, LoadAndConvertCheckEachItemsCrc32) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", Values({64, 64}, at::kFloat, 0));
  sd.AddTensor("transposed", Values({16, 8}, at::kFloat, 1).t());
  sd.AddBytes("blob", "payload");
  save(sd, DcpWriter(dir / "src"));

  // Clean: every item's CRC-32 is checked on the way through, and holds.
  {
    DcpReader reader(dir / "src");
    convert(reader, *OpenWriter(dir / "ok", Format::kNative), ConvertOptions{});
    // w, transposed, and the blob twice (read for its pickle's globals, then copied).
    EXPECT_EQ(reader.crc_checked(), 4);
    StateDict t = Targets(sd);
    LoadOptions lo;
    lo.verify_dcp_crc32 = true;
    DcpReader again(dir / "src");
    load(t, again, lo);
    EXPECT_EQ(again.crc_checked(), 3);
    DcpReader by_default(dir / "src");  // load leaves it off unless asked (it costs more than the read)
    load(t, by_default);
    EXPECT_EQ(by_default.crc_checked(), 0);
  }

  const proto::Metadata md = ParseMetadata(DcpReader(dir / "src").ReadMetadata(), dir / "src");
  const proto::ChunkMeta& w = md.tensors(0).fqn() == "w" ? md.tensors(0).chunks(0) : md.tensors(1).chunks(0);
  ASSERT_EQ(w.file().find('#'), std::string::npos);
  FlipByte(dir / "src/" + w.file(), w.offset() + 1000);

  ConvertOptions opt;
  std::string err = ErrorOf([&] { convert(dir / "src", dir / "bad", opt); });
  EXPECT_HAS(err, "key 'w' chunk [0:64, 0:64]");
  EXPECT_HAS(err, w.file());
  EXPECT_HAS(err, "fails its CRC-32");
  EXPECT_FALSE(std::filesystem::exists(dir / "bad/.metadata"));  // nothing committed
  // To DCP too (the format that would otherwise re-emit it with a fresh, valid CRC-32).
  opt.format = Format::kDcp;
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "bad", opt); }), "fails its CRC-32");
  EXPECT_FALSE(std::filesystem::exists(dir / "bad/.metadata"));

  StateDict t = Targets(sd);
  LoadOptions lo;
  lo.verify_dcp_crc32 = true;
  err = ErrorOf([&] { load(t, DcpReader(dir / "src"), lo); });
  EXPECT_HAS(err, "key 'w'");
  EXPECT_HAS(err, "fails its CRC-32");

  // Turned off, the data goes through as it is.
  opt.verify_checksums = false;
  convert(dir / "src", dir / "unchecked", opt);
  lo.verify_checksums = false;
  StateDict u = Targets(sd);
  load(u, DcpReader(dir / "src"), lo);
  EXPECT_FALSE(Same(u.FindTensor("w")->chunks[0].tensor, Full(sd, "w")));
}

TEST(Dcp, CorruptBlobsFailTheirCrc32) {
  TempDir dir;
  StateDict sd;
  sd.AddBytes("blob", "payload");
  save(sd, DcpWriter(dir / "src"));
  const proto::Metadata md = ParseMetadata(DcpReader(dir / "src").ReadMetadata(), dir / "src");
  const proto::BytesMeta& blob = md.bytes(0);
  // data.pkl is the archive's first entry, its data 64-byte aligned as torch.save does.
  FlipByte(dir / "src/" + blob.file(), blob.offset() + 64 + 2);
  StateDict t = Targets(sd);
  LoadOptions lo;
  lo.verify_dcp_crc32 = true;
  const std::string err = ErrorOf([&] { load(t, DcpReader(dir / "src"), lo); });
  EXPECT_HAS(err, "bytes key 'blob'");
  EXPECT_HAS(err, "entry archive/data.pkl fails its CRC-32");
  EXPECT_HAS(ErrorOf([&] { convert(dir / "src", dir / "out", ConvertOptions{}); }), "fails its CRC-32");
  EXPECT_FALSE(std::filesystem::exists(dir / "out/.metadata"));
}

TEST(Dcp, VerifyChecksTheZipStructurePyTorchNeeds) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", Values({8, 8}, at::kFloat, 0));
  sd.AddBytes("blob", "payload");
  save(sd, DcpWriter(dir / "good"));
  const DcpArchiveCheck good = CheckDcpArchives(dir / "good");
  EXPECT_TRUE(good.problems.empty()) << good.problems[0];
  const proto::Metadata md = ParseMetadata(DcpReader(dir / "good").ReadMetadata(), dir / "good");
  const proto::BytesMeta& blob = md.bytes(0);
  const std::string original = ReadFile(dir / "good/" + blob.file());

  // Every byte of the bytes item's end record (no CRC-32 covers it) and of its central
  // directory's first entry.
  std::vector<uint64_t> bytes;
  for (uint64_t i = 0; i < 22; ++i) bytes.push_back(blob.offset() + blob.length() - 22 + i);
  const uint64_t cd = blob.offset() + blob.length() - 22 - 1;  // last byte of the directory
  bytes.push_back(cd);
  for (uint64_t at : bytes) {
    std::string data = original;
    data[at] ^= 0x40;
    WriteFile(dir / "good/" + blob.file(), data);
    const DcpArchiveCheck bad = CheckDcpArchives(dir / "good");
    ASSERT_FALSE(bad.problems.empty()) << "byte " << at - blob.offset() << " of the item";
    EXPECT_HAS(bad.problems[0], "key 'blob'");
    EXPECT_HAS(bad.problems[0], blob.file());
  }
  WriteFile(dir / "good/" + blob.file(), original);

  // A local header that disagrees with the directory (its name).
  std::string data = original;
  data[blob.offset() + 30] ^= 0x01;  // the first byte of data.pkl's local name
  WriteFile(dir / "good/" + blob.file(), data);
  const DcpArchiveCheck bad = CheckDcpArchives(dir / "good");
  ASSERT_FALSE(bad.problems.empty());
  EXPECT_HAS(bad.problems[0], "its local header names it");
}

TEST(Dcp, VerifyNamesUnsafeGlobalsInBytesItems) {
  using pickle::Value;
  TempDir dir;
  // What pickle writes for an object whose __reduce__ is (os.system, ('touch x',)).
  Value call;
  call.kind = Value::Kind::kObject;
  call.cls = Value::Global("os", "system");
  call.args = Value::Tuple({Value::Str("touch x")});
  const std::string evil = torch_archive::EncodeObject(call);
  EXPECT_THROW(torch_archive::DecodeObject(evil, "evil"), Error);
  EXPECT_EQ(torch_archive::UnsafeGlobals(evil, "evil"), std::vector<std::string>{"os.system"});
  EXPECT_TRUE(torch_archive::UnsafeGlobals(
                  torch_archive::EncodeObject(*Value::Dict({{Value::Str("a"), Value::Int(1)}})), "plain")
                  .empty());

  StateDict sd = Sample();
  EXPECT_TRUE(CheckDcpArchives([&] { save(sd, DcpWriter(dir / "good")); return dir / "good"; }()).problems.empty());
  sd.AddBytes("evil", evil);
  save(sd, DcpWriter(dir / "bad"));
  const DcpArchiveCheck check = CheckDcpArchives(dir / "bad");
  ASSERT_EQ(check.problems.size(), 1u);
  EXPECT_HAS(check.problems[0], "bytes key 'evil'");
  EXPECT_HAS(check.problems[0], "os.system");
  EXPECT_HAS(check.problems[0], "dcp.load would import and call it");
  EXPECT_EQ(UnsafeDcpObjects(dir / "bad").size(), 1u);

  // convert carries it over unchanged, and says so.
  const ConvertStats st = convert(dir / "bad", dir / "converted", ConvertOptions{});
  ASSERT_EQ(st.warnings.size(), 1u);
  EXPECT_HAS(st.warnings[0], "bytes key 'evil'");
  EXPECT_HAS(st.warnings[0], "os.system");
  EXPECT_TRUE(convert(dir / "good", dir / "converted_good", ConvertOptions{}).warnings.empty());
}

TEST(Dcp, DataFileNamesParseStrictly) {
  long rank = -1, n = -1;
  EXPECT_TRUE(ParseDataFileName("__3_17.distcp", &rank, &n));
  EXPECT_EQ(rank, 3);
  EXPECT_EQ(n, 17);
  for (const char* bad : {"__99999999999999999999_0.distcp", "__0_99999999999999999999.distcp",
                          "__-1_0.distcp", "__0_-1.distcp", "__ 1_0.distcp", "__+1_0.distcp",
                          "__1_0.distcpx", "__1__0.distcp", "__1_.distcp", "___0.distcp", "__1_0"}) {
    EXPECT_FALSE(ParseDataFileName(bad, &rank, &n)) << bad;
  }
}

TEST(TorchArchive, TensorArchiveReadsBackAndObjectsRoundTrip) {
  const at::Tensor t = Values({3, 4}, at::kBFloat16, 5);
  const torch_archive::TensorArchive a("bfloat16", {3, 4}, 24);
  std::string archive = a.prefix();
  archive.append(static_cast<const char*>(t.const_data_ptr()), 24);
  archive += a.suffix(torch_archive::Crc32(t.const_data_ptr(), 24));
  EXPECT_EQ(archive.size(), a.prefix().size() + 24 + a.suffix_size());
  EXPECT_EQ(a.prefix().size() % 64, 0u);  // the data is 64-byte aligned, as torch.save does

  const pickle::ValuePtr v = torch_archive::DecodeObject(archive, "archive");
  ASSERT_TRUE(v->IsObjectOf("torch", "Tensor")) << pickle::Repr(*v);
  EXPECT_EQ(v->state->Get("dtype")->str, "bfloat16");
  EXPECT_EQ(v->state->Get("data")->str, std::string(static_cast<const char*>(t.const_data_ptr()), 24));

  using pickle::Value;
  const pickle::ValuePtr obj = Value::Dict({{Value::Str("step"), Value::Int(7)},
                                            {Value::Str("xs"), Value::List({Value::Float(1.5), Value::Str("a")})}});
  const pickle::ValuePtr back = torch_archive::DecodeObject(torch_archive::EncodeObject(*obj), "obj");
  EXPECT_EQ(pickle::Repr(*back), pickle::Repr(*obj));
  EXPECT_TRUE(torch_archive::IsTorchSaveArchive(archive));
  EXPECT_FALSE(torch_archive::IsTorchSaveArchive("PK\x03\x04 but not a zip at all, no"));
}

TEST(TorchArchive, Crc32CombinesPieces) {
  const std::string a = "hello ", b = "world";
  EXPECT_EQ(torch_archive::Crc32Combine(torch_archive::Crc32(a.data(), a.size()),
                                        torch_archive::Crc32(b.data(), b.size()), b.size()),
            torch_archive::Crc32((a + b).data(), a.size() + b.size()));
  EXPECT_EQ(torch_archive::Crc32("123456789", 9), 0xCBF43926u);  // the standard check value
}

}  // namespace
}  // namespace dcpp
