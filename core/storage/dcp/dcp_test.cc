// PyTorch DCP's format written and read by dcpp alone: round trips of every dtype, layouts
// and blobs, resharding on load, conversions into and out of it, saving over a checkpoint,
// key paths. Bad input is in dcp_metadata_test and dcp_crc_test; the same files against
// real PyTorch are in tests/interop/.
#include "core/storage/dcp/dcp.h"

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/dcpp.h"
#include "core/engine/async_save.h"
#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/dcp_test_util.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/storage.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"
#include "core/tools/convert.h"

namespace dcpp {
namespace {

using testing::ReadFile;
using testing::TempDir;

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

TEST(Dcp, SaveComputesNoXxh3ForDcpButDoesForNative) {
  // DCP keeps no chunk checksums, so save and convert skip the XXH3 pass for its writer; a
  // native save of the same state dict still records one per chunk.
  TempDir dir;
  EXPECT_FALSE(KeepsChunkChecksums(DcpWriter(dir.path() + "/dcp")));
  EXPECT_TRUE(KeepsChunkChecksums(FileSystemWriter(dir.path() + "/native")));
  save(Sample(), dir.path() + "/native");
  const proto::Metadata md = ParseMetadata(ReadFile(dir.path() + "/native/.metadata"), dir.path());
  int hashed = 0;
  for (const auto& t : md.tensors()) {
    for (const auto& c : t.chunks()) hashed += c.length() > 0 && c.checksum() != 0;
  }
  EXPECT_GT(hashed, 0);
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

// The MX and NVFP4 dtypes and the bit containers: torch.save and dcp.save name them as torch
// globals; dcpp writes and reads them as DCP, directly and by conversion, bit for bit.
TEST(Dcp, RoundTripsMxNvfp4AndBitsDtypes) {
  const c10::ScalarType kNew[] = {at::kFloat8_e8m0fnu, at::kFloat4_e2m1fn_x2, c10::ScalarType::Bits1x8,
                                  c10::ScalarType::Bits2x4, c10::ScalarType::Bits4x2,
                                  c10::ScalarType::Bits8, c10::ScalarType::Bits16};
  StateDict saved;
  int seed = 0;
  for (c10::ScalarType dtype : kNew) {
    const std::string fqn = std::string("t.") + c10::toString(dtype);
    const at::Tensor full = Values({6, 5}, dtype, seed++);
    saved.AddSharded(fqn, full, Layout::Sharded(2, 0), 0);
    saved.AddSharded(fqn, full, Layout::Sharded(2, 0), 1);
  }
  saved.AddTensor("scale0d", Values({}, at::kFloat8_e8m0fnu, 9));
  TempDir direct, native, converted;
  save(saved, DcpWriter(direct.path()));
  const std::string md = ReadFile(direct.path() + "/.metadata");
  EXPECT_NE(md.find("float8_e8m0fnu"), std::string::npos);
  EXPECT_NE(md.find("float4_e2m1fn_x2"), std::string::npos);
  save(saved, native.path());
  FileSystemReader native_reader(native.path());
  DcpWriter dcp_writer(converted.path());
  convert(native_reader, dcp_writer, ConvertOptions{});
  for (const std::string& path : {direct.path(), converted.path()}) {
    StateDict loaded = Targets(saved);
    load(loaded, DcpReader(path));
    for (const TensorEntry& e : saved.tensors()) {
      const at::Tensor got = loaded.FindTensor(e.fqn)->chunks[0].tensor;
      EXPECT_EQ(got.scalar_type(), e.dtype) << path << " " << e.fqn;
      EXPECT_TRUE(Same(Full(saved, e.fqn), got)) << path << " " << e.fqn;
    }
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

}  // namespace
}  // namespace dcpp
