// Verify against damage to the metadata: corrupt or missing .metadata, reserved file names,
// chunks with missing or overflowing geometry, checksums switched off; and bad options.
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

TEST(Verify, CorruptOrMissingMetadataIsOneProblem) {
  TempDir dir;
  const VerifyReport missing = Verify(dir.path());
  ASSERT_EQ(missing.problems.size(), 1u);
  EXPECT_EQ(missing.problems[0].file, ".metadata");
  EXPECT_HAS(missing.problems[0].message, ".metadata is missing");

  SaveSample(dir);
  WriteFile(dir / ".metadata", "not a protobuf \xff\xff\xff");
  const VerifyReport corrupt = Verify(dir.path());
  ASSERT_EQ(corrupt.problems.size(), 1u);
  EXPECT_EQ(corrupt.problems[0].file, ".metadata");
  EXPECT_HAS(corrupt.problems[0].message, ".metadata is corrupt");
  EXPECT_TRUE(corrupt.notes.empty());
}

// A chunk whose file is .metadata would read the metadata as tensor bytes: verify reports the
// metadata as a problem instead of reading it.
TEST(Verify, ReservedNameAsDataFileIsAProblem) {
  for (const std::string name : {".metadata", ".metadata.tmp", ".dcpp.lock"}) {
    TempDir dir;
    SaveSample(dir);
    proto::Metadata md = Md(dir);
    MutableTensor(md, "net1.bias").mutable_chunks(0)->set_file(name);
    WriteMd(dir, md);
    WriteFile(dir / ".metadata.tmp", std::string(4096, '\0'));
    WriteFile(dir / ".dcpp.lock", std::string(4096, '\0'));
    const VerifyReport r = Verify(dir.path());
    ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
    EXPECT_EQ(r.problems[0].file, ".metadata");
    EXPECT_HAS(r.problems[0].message, "key 'net1.bias' names data file '" + name + "', a name reserved");
    EXPECT_EQ(r.bytes_read, 0);
    StateDict sd;
    sd.AddTensor("net1.bias", at::zeros({16}));
    EXPECT_HAS(ErrorOf([&] { load(sd, dir.path()); }), "key 'net1.bias' names data file '" + name + "'");
  }
}

TEST(Verify, NativeCheckpointWithoutChecksumsIsFlaggedLoudly) {
  TempDir dir;
  SaveSample(dir);
  EXPECT_TRUE(InspectWarnings(Md(dir), true).empty());
  EXPECT_TRUE(Verify(dir.path()).warnings.empty());

  proto::Metadata md = Md(dir);
  md.set_checksum_algorithm(kNoChecksum);
  WriteMd(dir, md);
  const std::vector<std::string> w = InspectWarnings(md, true);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].rfind("checksums: NONE \u2014 data is not verified", 0), 0u) << w[0];
  EXPECT_TRUE(InspectWarnings(md, false).empty());  // DCP and safetensors have none by design
  const VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0], w[0]);
  EXPECT_FALSE(r.ok());  // and, for a native checkpoint, a problem too (NativeCheckpointWithChecksumsOffIsAProblem)
  // A flipped byte now goes unnoticed, which is what the warning says.
  const std::string file = md.tensors(0).chunks(0).file();
  std::string data = ReadFile(dir / file);
  data[md.tensors(0).chunks(0).offset()] ^= 1;
  WriteFile(dir / file, data);
  EXPECT_EQ(Verify(dir.path()).problems.size(), r.problems.size());  // no checksum mismatch reported
  EXPECT_EQ(Verify(dir.path()).warnings.size(), 1u);
}

// Regression: a chunk with sizes but no offsets (one flipped bit in a 1.0 .metadata turns the
// offsets into an unknown field) crashed Verify while it formatted the error.
TEST(Verify, ChunkWithoutOffsetsIsOneProblemNotACrash) {
  TempDir dir;
  SaveSample(dir);
  proto::Metadata md = Md(dir);
  MutableTensor(md, "net1.weight").mutable_chunks(1)->clear_offsets();
  md.set_format_minor(0);  // a 1.0 file has no checksum of its own to catch the flip
  WriteFile(dir / ".metadata", md.SerializeAsString());
  const VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_EQ(r.problems[0].file, ".metadata");
  EXPECT_HAS(r.problems[0].message, "key 'net1.weight' chunk 1 [?:+8, ?:+10] (0 offsets, 2 sizes) has 0 offsets");
}

// Regression: [2^62, 4] float32 with one empty chunk passed as "no problems" (numel x 4
// wrapped to 0); a chunk at offset INT64_MAX passed Contains by overflow.
TEST(Verify, SizesThatOverflowAreProblems) {
  TempDir dir;
  SaveSample(dir);
  proto::Metadata md = Md(dir);
  auto& step = MutableTensor(md, "net1.bias");
  step.set_dtype("float32");
  step.clear_shape();
  step.add_shape(int64_t{1} << 62);
  step.add_shape(4);
  step.mutable_chunks(0)->clear_sizes();
  step.mutable_chunks(0)->clear_offsets();
  for (int64_t v : {int64_t{1} << 62, int64_t{4}}) step.mutable_chunks(0)->add_sizes(v);
  for (int d = 0; d < 2; ++d) step.mutable_chunks(0)->add_offsets(0);
  step.mutable_chunks(0)->set_length(0);
  WriteMd(dir, md);
  VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_HAS(r.problems[0].message, "key 'net1.bias' has shape [0:4611686018427387904, 0:4] of float32, more than 2^63 bytes");

  TempDir dir2;
  SaveSample(dir2);
  md = Md(dir2);
  MutableTensor(md, "net1.bias").mutable_chunks(0)->set_offsets(0, INT64_MAX);
  WriteMd(dir2, md);
  r = Verify(dir2.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_HAS(r.problems[0].message, "key 'net1.bias' has chunk [9223372036854775807:+16] outside its shape [0:16]");
}

// A native checkpoint whose metadata switches checksums off is a problem for Verify and is
// flagged by InspectText; for formats without checksums (DCP, safetensors) it stays a note.
TEST(Verify, NativeCheckpointWithChecksumsOffIsAProblem) {
  TempDir dir;
  SaveSample(dir);
  proto::Metadata md = Md(dir);
  md.set_checksum_algorithm(kNoChecksum);
  WriteMd(dir, md);
  const VerifyReport r = Verify(dir.path());
  ASSERT_EQ(r.problems.size(), 1u) << AllProblems(r);
  EXPECT_EQ(r.problems[0].file, ".metadata");
  EXPECT_HAS(r.problems[0].message, "CHECKSUMS ARE OFF: the native metadata says checksum algorithm 'none'");
  EXPECT_EQ(r.chunks_checked, 8);
  EXPECT_HAS(InspectText(md), "none  (WARNING: NO CHECKSUMS: corrupt data cannot be detected)");
}

// load() refuses such a checkpoint while it verifies checksums (naming the folder and the way
// out), and reads it unverified when told to.
TEST(Verify, LoadRefusesNativeCheckpointWithChecksumsOff) {
  TempDir dir;
  SaveSample(dir);
  proto::Metadata md = Md(dir);
  md.set_checksum_algorithm(kNoChecksum);
  WriteMd(dir, md);
  StateDict sd;
  at::Tensor bias = at::zeros({16}, at::kFloat);
  sd.AddTensor("net1.bias", bias);
  EXPECT_HAS(ErrorOf([&] { load(sd, dir.path()); }),
             "load: checkpoint " + dir.path() + ": its metadata says checksum algorithm 'none', which dcpp "
             "never writes");
  EXPECT_EQ(bias.sum().item<float>(), 0.0f);
  LoadOptions unverified;
  unverified.verify_checksums = false;
  load(sd, dir.path(), unverified);
  EXPECT_TRUE(at::equal(bias, at::arange(16, at::kFloat)));
}

TEST(Verify, BadOptionsThrow) {
  TempDir dir;
  VerifyOptions opt;
  opt.thread_count = 0;
  EXPECT_THROW(Verify(dir.path(), opt), Error);
}

}  // namespace
}  // namespace dcpp
