// The CRC-32s torch.save records, checked as DCP items are read, loaded and converted, and
// verify's checks of the archives: their zip structure as PyTorch needs it, and the globals
// the pickles of bytes items name.
#include "core/storage/dcp/dcp.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/dcp_test_util.h"
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

}  // namespace
}  // namespace dcpp
