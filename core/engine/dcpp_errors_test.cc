// Bad input gets a clear error naming the key, file or script line, and a failed save never
// leaves a checkpoint that looks valid or damages the one already committed.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/dcpp.h"
#include "core/format/checksum.h"
#include "core/format/metadata.h"
#include "core/testing/errors.h"
#include "core/testing/full_disk.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::FullDiskWriter;
using testing::ErrorOf;
using testing::ReadFile;
using testing::WriteFile;
using testing::TempDir;

StateDict Sample() {
  StateDict sd;
  sd.AddTensor("net1.weight", at::arange(160, at::kFloat).reshape({16, 10}));
  sd.AddTensor("net1.bias", at::arange(16, at::kFloat));
  sd.AddBytes("step", "12");
  return sd;
}

StateDict Zeros() {
  StateDict sd;
  sd.AddTensor("net1.weight", at::zeros({16, 10}));
  sd.AddTensor("net1.bias", at::zeros({16}));
  sd.AddBytes("step", "");
  return sd;
}

proto::Metadata Md(const TempDir& d) { return ParseMetadata(ReadFile(d / ".metadata"), d.path()); }

TEST(Errors, MissingMetadata) {
  TempDir dir;
  StateDict sd = Zeros();
  const std::string err = ErrorOf([&] { load(sd, dir.path()); });
  EXPECT_HAS(err, "no checkpoint in " + dir.path());
  EXPECT_HAS(err, ".metadata is missing");
}

TEST(Errors, TruncatedDataFile) {
  TempDir dir;
  save(Sample(), dir.path());
  const std::string file = Md(dir).tensors(0).chunks(0).file();
  const std::string data = ReadFile(dir / file);
  WriteFile(dir / file, data.substr(0, data.size() - 100));
  StateDict sd = Zeros();
  const std::string err = ErrorOf([&] { load(sd, dir.path()); });
  EXPECT_HAS(err, file);
  EXPECT_HAS(err, "truncated");
}

TEST(Errors, FlippedByteFailsTheChecksum) {
  TempDir dir;
  save(Sample(), dir.path());
  const proto::Metadata md = Md(dir);
  const auto& chunk = md.tensors(0).chunks(0);
  std::string data = ReadFile(dir / chunk.file());
  data[chunk.offset() + 17] ^= 0x40;
  WriteFile(dir / chunk.file(), data);
  StateDict sd = Zeros();
  const std::string err = ErrorOf([&] { load(sd, dir.path()); });
  EXPECT_HAS(err, "checksum mismatch");
  EXPECT_HAS(err, "'" + md.tensors(0).fqn() + "'");
  EXPECT_HAS(err, chunk.file());
  // With verification off, the corrupt bytes load (the user asked for it).
  LoadOptions lo;
  lo.verify_checksums = false;
  EXPECT_NO_THROW(load(sd, dir.path(), lo));
}

TEST(Errors, ShapeAndDtypeMismatch) {
  TempDir dir;
  save(Sample(), dir.path());
  StateDict wrong_shape;
  wrong_shape.AddTensor("net1.weight", at::zeros({10, 16}));
  std::string err = ErrorOf([&] { load(wrong_shape, dir.path()); });
  EXPECT_HAS(err, "'net1.weight'");
  EXPECT_HAS(err, "shape mismatch");
  StateDict wrong_dtype;
  wrong_dtype.AddTensor("net1.bias", at::zeros({16}, at::kDouble));
  err = ErrorOf([&] { load(wrong_dtype, dir.path()); });
  EXPECT_HAS(err, "'net1.bias'");
  EXPECT_HAS(err, "dtype mismatch");
  EXPECT_HAS(err, "float32");
  EXPECT_HAS(err, "float64");
}

TEST(Errors, MissingKeyAndPartialLoad) {
  TempDir dir;
  save(Sample(), dir.path());
  StateDict sd = Zeros();
  sd.AddTensor("net3.weight", at::full({2}, 5.0f));
  const std::string err = ErrorOf([&] { load(sd, dir.path()); });
  EXPECT_HAS(err, "no key 'net3.weight'");
  EXPECT_HAS(err, "allow_partial_load");
  LoadOptions lo;
  lo.allow_partial_load = true;
  load(sd, dir.path(), lo);
  EXPECT_TRUE(at::equal(sd.FindTensor("net3.weight")->chunks[0].tensor, at::full({2}, 5.0f)));
  EXPECT_TRUE(at::equal(sd.FindTensor("net1.bias")->chunks[0].tensor, at::arange(16, at::kFloat)));
  EXPECT_EQ(sd.FindBytes("step")->data, "12");
}

TEST(Errors, LuaPlannerWithSyntaxError) {
  TempDir dir;
  const std::string script = dir / "broken.lua";
  WriteFile(script, "local P = {}\nfunction P.save_local(ctx, items)\n  return items\n\nreturn P\n");
  SaveOptions so;
  so.planner = script;
  const std::string err = ErrorOf([&] { save(Sample(), dir / "ckpt", so); });
  EXPECT_HAS(err, script);             // the full path, from the engine
  EXPECT_HAS(err, "/broken.lua:5:");    // file and line, from Lua
  EXPECT_HAS(err, "'end' expected");
}

TEST(Errors, LuaPlannerReturningAMalformedPlan) {
  TempDir dir;
  const std::string script = dir / "malformed.lua";
  WriteFile(script,
            "local P = {}\n"
            "function P.save_local(ctx, items) return items end\n"
            "function P.save_global(ctx, plans)\n"
            "  for _, items in ipairs(plans) do\n"
            "    for _, it in ipairs(items) do it.file = '../escape.distcp' end\n"
            "  end\n"
            "  return plans\n"
            "end\n"
            "return P\n");
  SaveOptions so;
  so.planner = script;
  std::string err = ErrorOf([&] { save(Sample(), dir / "ckpt", so); });
  EXPECT_HAS(err, script);
  EXPECT_HAS(err, "not a plain file name");
  // A runtime error inside the planner names the line and carries a traceback.
  WriteFile(script,
            "local P = {}\n"
            "function P.save_local(ctx, items)\n"
            "  return items[1].no_such.field\n"
            "end\n"
            "function P.save_global(ctx, plans) return plans end\n"
            "return P\n");
  err = ErrorOf([&] { save(Sample(), dir / "ckpt", so); });
  EXPECT_HAS(err, script);
  EXPECT_HAS(err, "/malformed.lua:3:");
  EXPECT_HAS(err, "stack traceback");
  EXPECT_FALSE(std::ifstream(dir / "ckpt/.metadata").good());
}

TEST(Errors, MetadataPathOutsideTheFolder) {
  TempDir dir;
  save(Sample(), dir.path());
  proto::Metadata md = Md(dir);
  md.mutable_tensors(0)->mutable_chunks(0)->set_file("../../etc/passwd");
  WriteFile(dir / ".metadata", SerializeMetadata(md));
  StateDict sd = Zeros();
  const std::string err = ErrorOf([&] { load(sd, dir.path()); });
  EXPECT_HAS(err, "../../etc/passwd");
  EXPECT_HAS(err, "not a plain file name");
}

TEST(Errors, NewerMajorVersionAndCorruptMetadata) {
  TempDir dir;
  save(Sample(), dir.path());
  proto::Metadata md = Md(dir);
  md.set_format_major(kFormatMajor + 1);
  md.set_format_minor(0);
  WriteFile(dir / ".metadata", SerializeMetadata(md));
  StateDict sd = Zeros();
  std::string err = ErrorOf([&] { load(sd, dir.path()); });
  EXPECT_HAS(err, "format version 2.0");
  WriteFile(dir / ".metadata", "\xff\xff\xff garbage");
  err = ErrorOf([&] { load(sd, dir.path()); });
  EXPECT_HAS(err, ".metadata is corrupt");
}

TEST(Errors, FailedSaveLeavesThePreviousCheckpointLoadable) {
  TempDir dir;
  save(Sample(), dir.path());
  const std::string old_md = ReadFile(dir / ".metadata");

  StateDict newer;
  newer.AddTensor("net1.weight", at::full({16, 10}, 3.0f));
  newer.AddTensor("net1.bias", at::full({16}, 3.0f));
  newer.AddBytes("step", "13");
  SaveOptions so;
  so.thread_count = 2;
  const std::string err = ErrorOf([&] { save(newer, FullDiskWriter(dir.path(), 100), so); });
  EXPECT_HAS(err, "No space left on device");
  EXPECT_HAS(err, "net1.");
  EXPECT_EQ(ReadFile(dir / ".metadata"), old_md);

  StateDict sd = Zeros();
  load(sd, dir.path());
  EXPECT_TRUE(at::equal(sd.FindTensor("net1.weight")->chunks[0].tensor,
                        at::arange(160, at::kFloat).reshape({16, 10})));
  EXPECT_EQ(sd.FindBytes("step")->data, "12");

  // A later successful save replaces it and cleans up older data files.
  save(newer, dir.path());
  load(sd, dir.path());
  EXPECT_EQ(sd.FindBytes("step")->data, "13");
  int data_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    data_files += e.path().extension() == ".distcp";
  }
  EXPECT_EQ(data_files, 1);
}

// A bool tensor [4, 6] saved whole, then its element [2, 3] set to `byte` and the chunk's
// checksum updated to match, so that only the bool rule can catch it. Returns the chunk's file.
std::string SaveBadBool(const TempDir& dir, unsigned char byte) {
  StateDict sd;
  sd.AddTensor("mask", at::arange(24).reshape({4, 6}).remainder(3).eq(0));
  save(sd, dir.path());
  proto::Metadata md = Md(dir);
  proto::ChunkMeta* c = md.mutable_tensors(0)->mutable_chunks(0);
  std::string data = ReadFile(dir / c->file());
  data[c->offset() + 2 * 6 + 3] = static_cast<char>(byte);
  WriteFile(dir / c->file(), data);
  c->set_checksum(Checksum::Of(data.data() + c->offset(), c->length()));
  WriteFile(dir / ".metadata", SerializeMetadata(md));
  return c->file();
}

// A bool holding 2 is undefined behaviour in LibTorch: load refuses it on every read path
// (straight into the target, through staging, a partial read), with checksums verified or not.
TEST(Errors, LoadRefusesABoolByteOtherThan0Or1) {
  TempDir dir;
  const std::string file = SaveBadBool(dir, 0x02);
  const std::string want = "key 'mask' chunk [0:4, 0:6] in " + dir.path() + "/" + file +
                           ": element [2, 3] is the byte 0x02, not a bool (0x00 false or 0x01 true)";
  for (bool verify : {true, false}) {
    LoadOptions lo;
    lo.verify_checksums = verify;
    StateDict whole;
    whole.AddTensor("mask", at::zeros({4, 6}, at::kBool));
    EXPECT_HAS(ErrorOf([&] { load(whole, dir.path(), lo); }), want);
    StateDict strided;  // not contiguous: read through the staging ring
    strided.AddTensor("mask", at::zeros({6, 4}, at::kBool).t());
    EXPECT_HAS(ErrorOf([&] { load(strided, dir.path(), lo); }), want);
    StateDict rows;  // rows 2 and 3 only: a partial read of the chunk
    rows.Add(TensorEntry{"mask", at::kBool, {4, 6}, {{Box{{2, 0}, {2, 6}}, at::zeros({2, 6}, at::kBool)}}});
    EXPECT_HAS(ErrorOf([&] { load(rows, dir.path(), lo); }), want);
    // Rows that do not hold the bad byte load: a reader checks the bytes it reads.
    const at::Tensor top = at::zeros({2, 6}, at::kBool);
    StateDict good;
    good.Add(TensorEntry{"mask", at::kBool, {4, 6}, {{Box{{0, 0}, {2, 6}}, top}}});
    load(good, dir.path(), lo);
    EXPECT_TRUE(at::equal(top, at::arange(12).reshape({2, 6}).remainder(3).eq(0)));
  }
}

// Boxes of one tensor that overlap without being equal would be stored twice in part, and
// every reader refuses such metadata: save refuses them before writing anything.
TEST(Errors, SaveRefusesChunksThatOverlapWithoutBeingEqual) {
  TempDir dir;
  const at::Tensor t = at::arange(18, at::kFloat).reshape({6, 3});
  StateDict sd;
  sd.Add(TensorEntry{"w", at::kFloat, {6, 3},
                     {{Box{{0, 0}, {4, 3}}, t.slice(0, 0, 4)}, {Box{{2, 0}, {4, 3}}, t.slice(0, 2, 6)}}});
  const std::string err = ErrorOf([&] { save(sd, dir / "ckpt"); });
  EXPECT_HAS(err, "key 'w': rank 0 writes chunk [0:4, 0:3] and rank 0 writes chunk [2:6, 0:3], which overlap "
                  "in [2:4, 0:3] without being equal");
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir / "ckpt", ec)) ADD_FAILURE() << e.path();
}

TEST(Errors, SaveOnTwoRanksRefusesShardsThatOverlapWithoutBeingEqual) {
  TempDir dir;
  save(Sample(), dir.path());  // a committed checkpoint, which must stay as it is
  const std::string before = ReadFile(dir / ".metadata");
  auto files = [&] {
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) names.insert(e.path().filename());
    return names;
  };
  const std::set<std::string> files_before = files();
  const at::Tensor t = at::arange(18, at::kFloat).reshape({6, 3});
  const auto errors = testing::RunRanks(2, [&](int rank, Comm& comm) {
    StateDict sd;
    const Box box{{2 * rank, 0}, {4, 3}};  // rank 0 [0:4], rank 1 [2:6]
    sd.Add(TensorEntry{"w", at::kFloat, {6, 3}, {{box, t.slice(0, 2 * rank, 2 * rank + 4)}}});
    sd.AddTensor("b", at::ones({3}));  // replicated: written once, no problem
    SaveOptions so;
    so.comm = &comm;
    save(sd, dir.path(), so);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_HAS(errors[r], "key 'w': rank 0 writes chunk [0:4, 0:3] and rank 1 writes chunk [2:6, 0:3], which "
                          "overlap in [2:4, 0:3] without being equal");
  }
  EXPECT_EQ(ReadFile(dir / ".metadata"), before);
  EXPECT_EQ(files(), files_before);  // nothing was written
}

}  // namespace
}  // namespace dcpp
