// ParseMetadata on untrusted bytes: the metadata checksum of format 1.1 (and 1.0 files without
// one), malformed chunk geometry, sizes that overflow 64 bits, keys and chunks listed twice,
// and every single-bit flip of a real .metadata.
#include "core/format/metadata.h"

#include <ATen/ATen.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstdint>

#include "core/dcpp.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::ReadFile;
using testing::TempDir;

// A metadata message of one float32 tensor `t` of `shape` with the given chunks
// ({offsets, sizes}), each in file "f" with the right length.
proto::Metadata OneTensor(std::vector<int64_t> shape, std::vector<Box> chunks, uint32_t minor = kFormatMinor) {
  proto::Metadata md;
  md.set_format_major(kFormatMajor);
  md.set_format_minor(minor);
  md.set_checksum_algorithm(kChecksumAlgorithm);
  auto* t = md.add_tensors();
  t->set_fqn("t");
  t->set_dtype("float32");
  for (int64_t s : shape) t->add_shape(s);
  for (const Box& b : chunks) {
    auto* c = t->add_chunks();
    for (int64_t o : b.offsets) c->add_offsets(o);
    for (int64_t s : b.sizes) c->add_sizes(s);
    c->set_file("f");
    uint64_t n = 4;  // wraps for the hostile sizes some tests give (unsigned: defined)
    for (int64_t s : b.sizes) n *= static_cast<uint64_t>(s);
    c->set_length(n);
  }
  return md;
}

// Format 1.0 bytes: the message alone, no checksum, so geometry checks are reached directly.
std::string V10(proto::Metadata md) {
  md.set_format_minor(0);
  return md.SerializeAsString();
}

std::string ParseError(const std::string& bytes, Conflicts c = Conflicts::kRefuse) {
  return ErrorOf([&] { ParseMetadata(bytes, "/ckpt", c); });
}

TEST(Metadata, RoundTripAddsAndChecksTheChecksum) {
  const proto::Metadata md = OneTensor({8, 4}, {Box{{0, 0}, {4, 4}}, Box{{4, 0}, {4, 4}}});
  const std::string bytes = SerializeMetadata(md);
  EXPECT_EQ(bytes.size(), md.SerializeAsString().size() + 9);
  EXPECT_EQ(static_cast<unsigned char>(bytes[bytes.size() - 9]), 0x79);
  const proto::Metadata back = ParseMetadata(bytes, "/ckpt");
  EXPECT_FALSE(back.has_metadata_checksum());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(back, md));
  // Serializing a parsed message again gives the same bytes.
  EXPECT_EQ(SerializeMetadata(back), bytes);
}

TEST(Metadata, Format10WithoutChecksumIsRead) {
  const proto::Metadata md = OneTensor({8}, {Box{{0}, {8}}});
  const proto::Metadata back = ParseMetadata(V10(md), "/ckpt");
  EXPECT_EQ(back.format_minor(), 0u);
  EXPECT_EQ(back.tensors(0).chunks(0).length(), 32u);
}

TEST(Metadata, Format11WithBadOrMissingChecksumIsRefused) {
  const std::string good = SerializeMetadata(OneTensor({8}, {Box{{0}, {8}}}));
  std::string bad = good;
  bad.back() ^= 1;
  EXPECT_HAS(ParseError(bad), "checkpoint /ckpt: .metadata is corrupt: its checksum does not match");
  // Without its trailer a 1.1 file is refused, not read as 1.0.
  const std::string cut = good.substr(0, good.size() - 9);
  EXPECT_HAS(ParseError(cut), ".metadata (format 1.1) does not end with its checksum");
  // A checksum field in a file that says 1.0 is checked all the same.
  proto::Metadata v10 = OneTensor({8}, {Box{{0}, {8}}}, 0);
  std::string v10_bytes = SerializeMetadata(v10);
  v10_bytes[v10_bytes.size() - 1] ^= 0x40;
  EXPECT_HAS(ParseError(v10_bytes), "its checksum does not match");
}

TEST(Metadata, ChunkWithSizesButFewerOffsetsIsAnErrorNotACrash) {
  // What one flipped bit did to a 1.0 file: the offsets became an unknown field.
  proto::Metadata md = OneTensor({8, 4}, {Box{{0, 0}, {8, 4}}});
  md.mutable_tensors(0)->mutable_chunks(0)->clear_offsets();
  for (const std::string& bytes : {V10(md), SerializeMetadata(md)}) {
    const std::string e = ParseError(bytes);
    EXPECT_HAS(e, "checkpoint /ckpt: key 't' chunk 0 [?:+8, ?:+4] (0 offsets, 2 sizes) has 0 offsets and 2 sizes "
                  "for a tensor of 2 dimensions");
  }
  md.mutable_tensors(0)->mutable_chunks(0)->add_offsets(0);
  EXPECT_HAS(ParseError(V10(md)), "has 1 offsets and 2 sizes");
  EXPECT_EQ((Box{{1, 2, 3}, {4}}).ToString(), "[1:5, 2:?, 3:?] (3 offsets, 1 sizes)");
}

TEST(Metadata, ShapeWhoseByteSizeOverflowsIsRefused) {
  // [2^62, 4] float32: numel x 4 wraps to 0, which a zero-length chunk used to match.
  proto::Metadata md = OneTensor({int64_t{1} << 62, 4}, {});
  auto* c = md.mutable_tensors(0)->add_chunks();
  c->add_offsets(0), c->add_offsets(0), c->add_sizes(int64_t{1} << 62), c->add_sizes(4);
  c->set_file("f");
  c->set_length(0);
  EXPECT_HAS(ParseError(V10(md)), "key 't' has shape [0:4611686018427387904, 0:4] of float32, more than 2^63 bytes");
  // The element count alone overflowing.
  proto::Metadata md2 = OneTensor({int64_t{1} << 40, int64_t{1} << 40}, {});
  EXPECT_HAS(ParseError(V10(md2)), "more than 2^63 bytes");
}

TEST(Metadata, ChunkOffsetsThatOverflowAreOutsideTheShape) {
  const int64_t max = INT64_MAX;
  EXPECT_HAS(ParseError(V10(OneTensor({8}, {Box{{max}, {1}}}))),
             "key 't' has chunk [9223372036854775807:+1] outside its shape [0:8]");
  EXPECT_HAS(ParseError(V10(OneTensor({8}, {Box{{max - 1}, {max}}}))), "outside its shape");
  // A negative size does not pull the end back inside.
  proto::Metadata md = OneTensor({8}, {Box{{5}, {-3}}});
  md.mutable_tensors(0)->mutable_chunks(0)->set_length(0);
  EXPECT_HAS(ParseError(V10(md)), "key 't' has chunk [5:2] outside its shape [0:8]");
  EXPECT_FALSE(Contains(Box{{0}, {8}}, Box{{max}, {1}}));
  EXPECT_FALSE(Contains(Box{{0}, {8}}, Box{{5}, {-3}}));
}

TEST(Metadata, FileRangesBeyond2To63AreRefused) {
  proto::Metadata md = OneTensor({8}, {Box{{0}, {8}}});
  md.mutable_tensors(0)->mutable_chunks(0)->set_offset(UINT64_MAX - 8);
  EXPECT_HAS(ParseError(V10(md)), "key 't' chunk [0:8] in f has offset 18446744073709551607 and length 32");
  proto::Metadata blob = OneTensor({8}, {Box{{0}, {8}}});
  auto* b = blob.add_bytes();
  b->set_fqn("rng");
  b->set_file("g");
  b->set_offset(4096);
  b->set_length(uint64_t{1} << 63);
  EXPECT_HAS(ParseError(V10(blob)), "bytes 'rng' in g has offset 4096 and length 9223372036854775808");
}

TEST(Metadata, KeysListedTwiceAreRefusedForLoading) {
  proto::Metadata md = OneTensor({8}, {Box{{0}, {8}}});
  *md.add_tensors() = md.tensors(0);
  EXPECT_HAS(ParseError(SerializeMetadata(md)), "checkpoint /ckpt: key 't' is listed 2 times in the metadata");
  EXPECT_EQ(ParseMetadata(SerializeMetadata(md), "/ckpt", Conflicts::kAllow).tensors_size(), 2);
  // A tensor and a blob of one name.
  proto::Metadata md2 = OneTensor({8}, {Box{{0}, {8}}});
  auto* b = md2.add_bytes();
  b->set_fqn("t");
  b->set_file("f");
  EXPECT_HAS(ParseError(SerializeMetadata(md2)), "key 't' is listed 2 times");
}

TEST(Metadata, OverlappingOrRepeatedChunksAreRefusedForLoading) {
  const auto twice = OneTensor({8, 4}, {Box{{0, 0}, {4, 4}}, Box{{4, 0}, {4, 4}}, Box{{0, 0}, {4, 4}}});
  EXPECT_HAS(ParseError(SerializeMetadata(twice)),
             "key 't' lists chunk [0:4, 0:4] twice (in f and in f): every element must be stored once");
  // Column shards (the sweep runs along dimension 1) with one that overlaps two others.
  const auto cols = OneTensor({4, 8}, {Box{{0, 0}, {4, 2}}, Box{{0, 2}, {4, 2}}, Box{{0, 4}, {4, 4}},
                                       Box{{1, 1}, {1, 2}}});
  EXPECT_HAS(ParseError(SerializeMetadata(cols)), "key 't' has overlapping chunks [0:4, 0:2] in f and [1:2, 1:3] in f");
  EXPECT_EQ(ParseMetadata(SerializeMetadata(cols), "/ckpt", Conflicts::kAllow).tensors(0).chunks_size(), 4);
  // Touching chunks, empty chunks and a 0-d tensor's single chunk are fine; two 0-d chunks are not.
  ParseMetadata(SerializeMetadata(OneTensor({4, 8}, {Box{{0, 0}, {4, 4}}, Box{{0, 4}, {4, 4}}, Box{{0, 4}, {4, 0}},
                                                     Box{{0, 4}, {4, 0}}})),
                "/ckpt");
  ParseMetadata(SerializeMetadata(OneTensor({}, {Box{}})), "/ckpt");
  EXPECT_HAS(ParseError(SerializeMetadata(OneTensor({}, {Box{}, Box{}}))), "key 't' lists chunk [] twice");
}

// The folder's own files are never data: a chunk or blob naming one is refused (for loading
// and for verify alike), naming the key and the file.
TEST(Metadata, ReservedNamesAreRefusedAsDataFiles) {
  for (const std::string name : {".metadata", ".metadata.tmp", ".dcpp.lock"}) {
    proto::Metadata chunk = OneTensor({8}, {Box{{0}, {8}}});
    chunk.mutable_tensors(0)->mutable_chunks(0)->set_file(name);
    for (Conflicts c : {Conflicts::kRefuse, Conflicts::kAllow}) {
      EXPECT_HAS(ParseError(SerializeMetadata(chunk), c),
                 "checkpoint /ckpt: key 't' names data file '" + name +
                     "', a name reserved for the checkpoint's own files");
    }
    proto::Metadata blob = OneTensor({8}, {Box{{0}, {8}}});
    auto* b = blob.add_bytes();
    b->set_fqn("rng");
    b->set_file(name);
    b->set_length(4);
    for (Conflicts c : {Conflicts::kRefuse, Conflicts::kAllow}) {
      EXPECT_HAS(ParseError(SerializeMetadata(blob), c), "key 'rng' names data file '" + name + "', a name reserved");
    }
  }
  // Names that merely resemble them are ordinary data files.
  for (const std::string name : {".metadata2", "x.metadata", ".dcpp.lock.old", "metadata"}) {
    proto::Metadata md = OneTensor({8}, {Box{{0}, {8}}});
    md.mutable_tensors(0)->mutable_chunks(0)->set_file(name);
    EXPECT_EQ(ParseMetadata(SerializeMetadata(md), "/ckpt").tensors(0).chunks(0).file(), name);
  }
}

TEST(Metadata, UnknownDtypeNamesTheKey) {
  proto::Metadata md = OneTensor({8}, {Box{{0}, {8}}});
  md.mutable_tensors(0)->set_dtype("float33");
  EXPECT_HAS(ParseError(SerializeMetadata(md)), "checkpoint /ckpt: key 't': unknown dtype 'float33'");
}

// Every single-bit flip of a real .metadata is refused or leaves the message as it was.
TEST(Metadata, EverySingleBitFlipIsRefusedOrHarmless) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", at::arange(12, at::kFloat).reshape({3, 4}));
  sd.AddSharded("s", at::arange(8, at::kFloat), Layout::Sharded(2, 0), 0);
  sd.AddSharded("s", at::arange(8, at::kFloat), Layout::Sharded(2, 0), 1);
  sd.AddBytes("rng", "state");
  save(sd, dir.path());
  const std::string bytes = ReadFile(dir / ".metadata");
  const proto::Metadata md = ParseMetadata(bytes, dir.path());
  ASSERT_EQ(md.format_minor(), 1u);
  int refused = 0, same = 0;
  for (size_t i = 0; i < bytes.size() * 8; ++i) {
    std::string flipped = bytes;
    flipped[i / 8] = static_cast<char>(flipped[i / 8] ^ (1 << (i % 8)));
    try {
      const proto::Metadata got = ParseMetadata(flipped, dir.path());
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(got, md))
          << "bit " << i << " changed the metadata without being noticed: " << got.ShortDebugString();
      ++same;
    } catch (const Error& e) {
      ++refused;
    }
  }
  EXPECT_EQ(refused + same, static_cast<int>(bytes.size() * 8));
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace dcpp
