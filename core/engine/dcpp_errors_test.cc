// Bad input gets a clear error naming the key, file or script line, and a failed save never
// leaves a checkpoint that looks valid or damages the one already committed.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/testing/errors.h"
#include "core/testing/full_disk.h"
#include "core/testing/temp_dir.h"

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

}  // namespace
}  // namespace dcpp
