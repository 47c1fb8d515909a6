// Verify against the damage it must find: flipped bytes, truncated or missing files, gaps in a
// tensor's coverage, overlapping chunks with different data, corrupt metadata.
#include "core/tools/verify.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/base/error.h"
#include "core/dcpp.h"
#include "core/format/checksum.h"
#include "core/format/metadata.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"
#include "core/tools/inspect.h"
#include "core/tools/sample_checkpoint.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::Md;
using testing::MutableTensor;
using testing::ReadFile;
using testing::SaveSample;
using testing::SumOfLengths;
using testing::TempDir;
using testing::Tensor;
using testing::WriteFile;
using testing::WriteMd;

std::string AllProblems(const VerifyReport& r) {
  std::string s;
  for (const auto& p : r.problems) s += p.message + "\n";
  return s;
}

TEST(Verify, GoodCheckpointHasNoProblems) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  for (int threads : {1, 2, 3}) {
    for (int64_t buffer : {int64_t{7}, int64_t{8} << 20}) {  // 7 bytes: every chunk in many blocks
      VerifyOptions opt;
      opt.thread_count = threads;
      opt.buffer_bytes = buffer;
      const VerifyReport r = Verify(dir.path(), opt);
      EXPECT_TRUE(r.ok()) << AllProblems(r);
      EXPECT_EQ(r.tensors, 4);
      EXPECT_EQ(r.bytes_entries, 1);
      EXPECT_EQ(r.chunks_checked, 8);
      EXPECT_EQ(r.blobs_checked, 1);
      EXPECT_EQ(r.overlaps_compared, 0);
      EXPECT_EQ(static_cast<uint64_t>(r.bytes_read), SumOfLengths(md));
      EXPECT_TRUE(r.notes.empty());
      EXPECT_EQ(r.data_files.size(), 2u);
    }
  }
}

TEST(Verify, FlippedByteNamesKeyChunkAndFile) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  const auto& chunk = Tensor(md, "net1.weight").chunks(1);
  std::string data = ReadFile(dir / chunk.file());
  data[chunk.offset() + 101] ^= 0x01;
  WriteFile(dir / chunk.file(), data);
  VerifyOptions opt;
  opt.buffer_bytes = 64;
  const VerifyReport r = Verify(dir.path(), opt);
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_EQ(r.problems[0].key, "net1.weight");
  EXPECT_EQ(r.problems[0].file, chunk.file());
  EXPECT_HAS(r.problems[0].message, "key 'net1.weight' chunk " + ChunkBox(chunk).ToString() + " in " + chunk.file());
  EXPECT_HAS(r.problems[0].message, "checksum mismatch");
  EXPECT_HAS(r.problems[0].message, ChecksumHex(chunk.checksum()));
  // Every other chunk was still read.
  EXPECT_EQ(r.chunks_checked, 8);
  EXPECT_EQ(static_cast<uint64_t>(r.bytes_read), SumOfLengths(md));
}

TEST(Verify, FlippedBlobByte) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  const auto& blob = md.bytes(0);
  std::string data = ReadFile(dir / blob.file());
  data[blob.offset() + 2] ^= 0x20;
  WriteFile(dir / blob.file(), data);
  const VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_EQ(r.problems[0].key, "rng");
  EXPECT_HAS(r.problems[0].message, "bytes 'rng' in " + blob.file());
  EXPECT_HAS(r.problems[0].message, "checksum mismatch");
}

TEST(Verify, TruncatedFileNamesEveryEntryPastTheEnd) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  const auto& chunk = Tensor(md, "net1.weight").chunks(0);
  const std::string data = ReadFile(dir / chunk.file());
  const uint64_t keep = chunk.offset() + 10;
  WriteFile(dir / chunk.file(), data.substr(0, keep));
  int past_end = 0;  // entries of that file that no longer fit
  for (const auto& t : md.tensors()) {
    for (const auto& c : t.chunks()) past_end += c.file() == chunk.file() && c.offset() + c.length() > keep;
  }
  for (const auto& b : md.bytes()) past_end += b.file() == chunk.file() && b.offset() + b.length() > keep;
  const VerifyReport r = Verify(dir.path());
  EXPECT_EQ(r.problem_count(), past_end) << AllProblems(r);
  ASSERT_FALSE(r.ok());
  bool named = false;
  for (const auto& p : r.problems) {
    EXPECT_EQ(p.file, chunk.file());
    EXPECT_HAS(p.message, "truncated");
    if (p.key == "net1.weight") {
      named = true;
      EXPECT_HAS(p.message, StrCat("needs bytes [", chunk.offset(), ", ", chunk.offset() + chunk.length(),
                                   ") but the file has ", keep, " bytes"));
    }
  }
  EXPECT_TRUE(named) << AllProblems(r);
}

TEST(Verify, MissingDataFile) {
  TempDir dir;
  SaveSample(dir);
  const std::string file = Tensor(Md(dir), "net1.bias").chunks(0).file();
  std::filesystem::remove(dir / file);
  const VerifyReport r = Verify(dir.path());
  ASSERT_FALSE(r.ok());
  for (const auto& p : r.problems) {
    EXPECT_EQ(p.file, file);
    EXPECT_HAS(p.message, "cannot open data file");
  }
}

TEST(Verify, GapNamesTheUncoveredBox) {
  TempDir dir;
  SaveSample(dir);
  proto::Metadata md = Md(dir);
  auto* chunks = MutableTensor(md, "net1.weight").mutable_chunks();
  if (chunks->Get(0).offsets(0) == 8) chunks->SwapElements(0, 1);
  chunks->RemoveLast();  // [8:16, 0:10]
  WriteMd(dir, md);
  const VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_EQ(r.problems[0].key, "net1.weight");
  EXPECT_HAS(r.problems[0].message, "region [8:16, 0:10] is in no chunk (80 of 160 elements uncovered)");
  // Only the chunks the metadata still lists are read.
  EXPECT_EQ(r.chunks_checked, 7);
}

TEST(Verify, GapInTheMiddleOfAGrid) {
  TempDir dir;
  SaveSample(dir);
  proto::Metadata md = Md(dir);
  auto* chunks = MutableTensor(md, "grid").mutable_chunks();
  for (int i = 0; i < chunks->size(); ++i) {
    if (chunks->Get(i).offsets(0) == 0 && chunks->Get(i).offsets(1) == 4) {
      chunks->SwapElements(i, chunks->size() - 1);
      chunks->RemoveLast();
      break;
    }
  }
  ASSERT_EQ(chunks->size(), 3);
  WriteMd(dir, md);
  const VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_HAS(r.problems[0].message, "key 'grid' shape [8, 8]: region [0:4, 4:8] is in no chunk (16 of 64");
}

TEST(Verify, ZeroDimTensorWithoutChunk) {
  TempDir dir;
  SaveSample(dir);
  proto::Metadata md = Md(dir);
  MutableTensor(md, "step").clear_chunks();
  WriteMd(dir, md);
  const VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_HAS(r.problems[0].message, "key 'step' shape []: region [] is in no chunk (1 of 1");
}

// Adds to tensor "t" ([8, 4] float, two row chunks) a chunk [2:6, 0:4] whose bytes are those
// of tensor "u" ([4, 4]): the new chunk overlaps both of t's chunks.
VerifyReport VerifyWithOverlap(const at::Tensor& u, const VerifyOptions& opt, std::string* file_u) {
  TempDir dir;
  StateDict sd;
  const at::Tensor t = at::arange(32, at::kFloat).reshape({8, 4});
  for (int r = 0; r < 2; ++r) sd.AddSharded("t", t, Layout::Sharded(2, 0), r);
  sd.AddTensor("u", u);
  save(sd, dir.path());
  proto::Metadata md = Md(dir);
  proto::ChunkMeta extra = Tensor(md, "u").chunks(0);
  *file_u = extra.file();
  extra.clear_offsets();
  extra.add_offsets(2);
  extra.add_offsets(0);
  *MutableTensor(md, "t").add_chunks() = extra;
  WriteMd(dir, md);
  return Verify(dir.path(), opt);
}

// Loading refuses overlapping chunks (ParseMetadata), so Verify reports each pair even when
// the common elements agree.
TEST(Verify, OverlapWithEqualDataIsStillAProblem) {
  const at::Tensor t = at::arange(32, at::kFloat).reshape({8, 4});
  for (int64_t buffer : {int64_t{8}, int64_t{8} << 20}) {
    VerifyOptions opt;
    opt.buffer_bytes = buffer;
    std::string file;
    const VerifyReport r = VerifyWithOverlap(t.slice(0, 2, 6).clone(), opt, &file);
    ASSERT_EQ(r.problems.size(), 2u) << AllProblems(r);
    EXPECT_HAS(r.problems[0].message, " and [2:6, 0:4] in " + file + " overlap in [2:4, 0:4]; the common elements "
                                      "agree (load and convert refuse overlapping chunks)");
    EXPECT_HAS(r.problems[1].message, "overlap in [4:6, 0:4]; the common elements agree");
    EXPECT_EQ(r.overlaps_compared, 2);
    EXPECT_EQ(r.chunks_checked, 4);
  }
}

TEST(Verify, OverlapWithDifferentDataNamesBothChunks) {
  at::Tensor u = at::arange(32, at::kFloat).reshape({8, 4}).slice(0, 2, 6).clone();
  u.index_put_({3, 1}, -1.0f);  // element [5, 1] of t: in t's second chunk only
  for (int64_t buffer : {int64_t{8}, int64_t{8} << 20}) {
    VerifyOptions opt;
    opt.buffer_bytes = buffer;
    std::string file;
    const VerifyReport r = VerifyWithOverlap(u, opt, &file);
    ASSERT_EQ(r.problems.size(), 2u) << AllProblems(r);
    EXPECT_HAS(r.problems[0].message, "overlap in [2:4, 0:4]; the common elements agree");
    EXPECT_EQ(r.problems[1].key, "t");
    const std::string& m = r.problems[1].message;
    EXPECT_HAS(m, "chunks [4:8, 0:4] in ");
    EXPECT_HAS(m, " and [2:6, 0:4] in " + file);
    EXPECT_HAS(m, "overlap in [4:6, 0:4] but hold different data (first difference at [5, 1])");
  }
}

// A bool element holding a byte other than 0 or 1 is a problem naming key, chunk, file and the
// element, even when the checksum matches (as it does when the writer itself wrote the byte).
TEST(Verify, BoolByteOtherThan0Or1IsAProblem) {
  for (int64_t buffer : {int64_t{5}, int64_t{8} << 20}) {  // 5 bytes: the chunk in many blocks
    TempDir dir;
    StateDict sd;
    sd.AddTensor("mask", at::arange(24).reshape({4, 6}).remainder(2).eq(0));
    sd.AddTensor("flag", at::scalar_tensor(true, at::kBool));
    save(sd, dir.path());
    proto::Metadata md = Md(dir);
    for (const auto& [key, index, byte] : {std::make_tuple("mask", 15, 0xff), std::make_tuple("flag", 0, 0x02),
                                           std::make_tuple("mask", 20, 0x03)}) {
      proto::ChunkMeta* c = MutableTensor(md, key).mutable_chunks(0);
      std::string data = ReadFile(dir / c->file());
      data[c->offset() + index] = static_cast<char>(byte);
      WriteFile(dir / c->file(), data);
      c->set_checksum(Checksum::Of(data.data() + c->offset(), c->length()));
    }
    WriteMd(dir, md);
    VerifyOptions opt;
    opt.buffer_bytes = buffer;
    const VerifyReport r = Verify(dir.path(), opt);
    ASSERT_EQ(r.problems.size(), 2u) << AllProblems(r);  // in key order; the first bad element only
    const auto& flag = Tensor(md, "flag").chunks(0);
    EXPECT_EQ(r.problems[0].key, "flag");
    EXPECT_EQ(r.problems[0].file, flag.file());
    EXPECT_HAS(r.problems[0].message, StrCat("key 'flag' chunk [] in ", flag.file(), ": element [] (byte ",
                                             flag.offset(), " of the file) is 0x02, not a bool"));
    const auto& mask = Tensor(md, "mask").chunks(0);
    EXPECT_EQ(r.problems[1].key, "mask");
    EXPECT_HAS(r.problems[1].message, StrCat("key 'mask' chunk [0:4, 0:6] in ", mask.file(), ": element [2, 3] (byte ",
                                             mask.offset() + 15, " of the file) is 0xff, not a bool (0x00 false or "
                                             "0x01 true); load and convert refuse it"));
    EXPECT_EQ(r.chunks_checked, 2);
  }
}

// An empty chunk and a zero-length blob hold no bytes: their files are never read, so a missing
// file or an offset past any file's end is no problem for verify or load.
TEST(Verify, EmptyChunkAndZeroLengthBlobNeedNoFile) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("empty", at::zeros({0, 3}));
  sd.AddTensor("w", at::ones({2, 3}));
  sd.AddBytes("none", "");
  save(sd, dir.path());
  proto::Metadata md = Md(dir);
  MutableTensor(md, "empty").mutable_chunks(0)->set_file("__77_77.distcp");
  MutableTensor(md, "empty").mutable_chunks(0)->set_offset(uint64_t{1} << 40);
  md.mutable_bytes(0)->set_file("__78_78.distcp");
  md.mutable_bytes(0)->set_offset(uint64_t{1} << 40);
  WriteMd(dir, md);
  const VerifyReport r = Verify(dir.path());
  EXPECT_TRUE(r.ok()) << AllProblems(r);
  EXPECT_EQ(r.chunks_checked, 2);
  EXPECT_EQ(r.blobs_checked, 1);
  StateDict back;
  back.AddTensor("empty", at::zeros({0, 3}));
  back.AddTensor("w", at::zeros({2, 3}));
  back.AddBytes("none", "stale");
  load(back, dir.path());
  EXPECT_EQ(back.FindBytes("none")->data, "");
  EXPECT_TRUE(at::equal(back.FindTensor("w")->chunks[0].tensor, at::ones({2, 3})));
  // Their checksum is still that of no bytes.
  md.mutable_bytes(0)->set_checksum(12345);
  WriteMd(dir, md);
  const VerifyReport bad = Verify(dir.path());
  ASSERT_EQ(bad.problems.size(), 1u) << AllProblems(bad);
  EXPECT_HAS(bad.problems[0].message, "bytes 'none' in __78_78.distcp: checksum mismatch");
}

TEST(Verify, UnreferencedFileIsANoteNotAProblem) {
  TempDir dir;
  SaveSample(dir);
  WriteFile(dir / "__7_99.distcp", "debris");
  const VerifyReport r = Verify(dir.path());
  EXPECT_TRUE(r.ok()) << AllProblems(r);
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_HAS(r.notes[0], "__7_99.distcp (6 bytes) is not part of the checkpoint");
}

TEST(Verify, ProblemListIsCapped) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  for (const auto& c : Tensor(md, "grid").chunks()) {
    std::string data = ReadFile(dir / c.file());
    data[c.offset()] ^= 0x01;
    WriteFile(dir / c.file(), data);
  }
  VerifyOptions opt;
  opt.max_problems = 3;
  const VerifyReport r = Verify(dir.path(), opt);
  EXPECT_EQ(r.problems.size(), 3u);
  EXPECT_EQ(r.problems_omitted, 1);
  EXPECT_EQ(r.problem_count(), 4);
  for (const auto& p : r.problems) EXPECT_EQ(p.key, "grid");
}

}  // namespace
}  // namespace dcpp
