#include "core/engine/chunk_io.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/format/checksum.h"

namespace dcpp {
namespace {

// An in-memory file that records the (offset, length) of every call.
class MemFile : public FileSink, public FileSource {
 public:
  void WriteAt(uint64_t offset, const void* data, size_t length) override {
    calls.emplace_back(offset, length);
    if (bytes.size() < offset + length) bytes.resize(offset + length);
    std::memcpy(bytes.data() + offset, data, length);
  }
  void Finish() override {}
  void ReadAt(uint64_t offset, void* data, size_t length) override {
    calls.emplace_back(offset, length);
    ASSERT_LE(offset + length, bytes.size());
    std::memcpy(data, bytes.data() + offset, length);
  }
  uint64_t Size() override { return bytes.size(); }

  std::string bytes;
  std::vector<std::pair<uint64_t, size_t>> calls;
};

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Lengths around the block boundaries, where a split could lose or repeat bytes.
std::vector<int64_t> Lengths() {
  const int64_t b = kHashedBlockBytes;
  return {0, 1, b - 1, b, b + 1, 2 * b, 3 * b + 17};
}

TEST(ChunkIo, WriteHashedWritesEveryByteInBlocksAndHashesThemAll) {
  for (int64_t n : Lengths()) {
    const std::string data = RandomBytes(static_cast<size_t>(n), static_cast<unsigned>(n));
    MemFile f;
    Checksum sum;
    const uint64_t at = 4096 + 3;  // an item need not start on a block
    WriteHashed(f, at, data.data(), n, &sum);
    EXPECT_EQ(sum.Digest(), Checksum::Of(data.data(), data.size())) << n;
    ASSERT_EQ(f.bytes.size(), n == 0 ? 0 : at + n) << n;
    if (n > 0) {
      EXPECT_EQ(f.bytes.substr(at), data) << n;
    }
    uint64_t next = at;
    for (const auto& [off, len] : f.calls) {  // in order, contiguous, one block at most each
      EXPECT_EQ(off, next) << n;
      EXPECT_LE(static_cast<int64_t>(len), kHashedBlockBytes) << n;
      next = off + len;
    }
    EXPECT_EQ(f.calls.size(), static_cast<size_t>((n + kHashedBlockBytes - 1) / kHashedBlockBytes)) << n;
  }
}

TEST(ChunkIo, ReadHashedReadsEveryByteInBlocksAndHashesThemAll) {
  for (int64_t n : Lengths()) {
    MemFile f;
    const uint64_t at = 1000;
    f.bytes = RandomBytes(static_cast<size_t>(at + n + 50), 7 + static_cast<unsigned>(n));
    const std::string want = f.bytes.substr(at, static_cast<size_t>(n));
    std::string got(static_cast<size_t>(n), '\0');
    Checksum sum;
    ReadHashed(f, at, got.data(), n, &sum);
    EXPECT_EQ(got, want) << n;
    EXPECT_EQ(sum.Digest(), Checksum::Of(want.data(), want.size())) << n;
    uint64_t next = at;
    for (const auto& [off, len] : f.calls) {
      EXPECT_EQ(off, next) << n;
      EXPECT_LE(static_cast<int64_t>(len), kHashedBlockBytes) << n;
      next = off + len;
    }
    EXPECT_EQ(next, at + n) << n;
  }
}

TEST(ChunkIo, WithoutAChecksumTheBytesStillMove) {
  const int64_t n = 2 * kHashedBlockBytes + 5;
  const std::string data = RandomBytes(static_cast<size_t>(n), 3);
  MemFile f;
  WriteHashed(f, 0, data.data(), n, nullptr);
  std::string back(static_cast<size_t>(n), '\0');
  ReadHashed(f, 0, back.data(), n, nullptr);
  EXPECT_EQ(back, data);
}

// A checksum fed by the chunk I/O over several calls equals one over the whole chunk: a chunk
// read through the staging ring is hashed in ring-sized pieces.
TEST(ChunkIo, PiecewiseReadsChainIntoOneDigest) {
  const int64_t n = 5 * kHashedBlockBytes / 2 + 11;
  MemFile f;
  f.bytes = RandomBytes(static_cast<size_t>(n), 9);
  std::string got(static_cast<size_t>(n), '\0');
  Checksum sum;
  const int64_t cut = kHashedBlockBytes + 333;
  ReadHashed(f, 0, got.data(), cut, &sum);
  ReadHashed(f, cut, got.data() + cut, n - cut, &sum);
  EXPECT_EQ(sum.Digest(), Checksum::Of(f.bytes.data(), f.bytes.size()));
}

}  // namespace
}  // namespace dcpp
