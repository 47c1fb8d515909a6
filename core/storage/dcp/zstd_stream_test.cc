// ZstdSource and ZstdCompressRange: round trips, reads in every order, frames written by
// libzstd's one-shot API (several back to back), corruption and truncation.
#include "core/storage/dcp/zstd_stream.h"

#include <zstd.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "core/base/error.h"
#include "core/testing/errors.h"

namespace dcpp {
namespace {

using testing::ErrorOf;

class StringSource final : public FileSource {
 public:
  explicit StringSource(std::string s) : s_(std::move(s)) {}
  void ReadAt(uint64_t offset, void* data, size_t length) override {
    ASSERT_LE(offset + length, s_.size());
    std::memcpy(data, s_.data() + offset, length);
    reads_ += 1;
  }
  uint64_t Size() override { return s_.size(); }
  int reads_ = 0;

 private:
  std::string s_;
};

class StringSink final : public FileSink {
 public:
  void WriteAt(uint64_t offset, const void* data, size_t length) override {
    if (s.size() < offset + length) s.resize(offset + length);
    std::memcpy(s.data() + offset, data, length);
  }
  void Finish() override {}
  std::string s;
};

// Bytes that compress somewhat but not to nothing.
std::string Data(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i % 251 < 100 ? rng() % 16 : i % 7);
  return s;
}

std::string OneShot(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 1);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::string Read(FileSource& src, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  src.ReadAt(offset, out.data(), n);
  return out;
}

TEST(ZstdStream, CompressRangeRoundTripsAndRecordsTheSize) {
  const std::string data = Data(3 << 20, 1);
  StringSource src("prefix" + data + "suffix");
  StringSink sink;
  sink.s = "head";
  const uint64_t n = ZstdCompressRange(src, 6, data.size(), sink, 4, 3, "item");
  ASSERT_EQ(sink.s.size(), 4 + n);
  EXPECT_LT(n, data.size());
  const std::string frame = sink.s.substr(4);
  EXPECT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), data.size());
  std::string back(data.size(), '\0');
  ASSERT_EQ(ZSTD_decompress(back.data(), back.size(), frame.data(), frame.size()), data.size());
  EXPECT_EQ(back, data);
}

TEST(ZstdStream, ReadsInAnyOrder) {
  const std::string data = Data(1 << 20, 2);
  const std::string frame = OneShot(data);
  auto file = std::make_shared<StringSource>("xx" + frame + "yy");
  ZstdSource src(file, 2, frame.size(), "item");
  EXPECT_EQ(src.Size(), data.size());
  EXPECT_EQ(Read(src, data.size() - 10, 10), data.substr(data.size() - 10));  // the kept tail
  EXPECT_EQ(Read(src, 5, 100), data.substr(5, 100));                           // the kept head
  EXPECT_EQ(Read(src, 500000, 70000), data.substr(500000, 70000));             // forward
  EXPECT_EQ(Read(src, 600000, 1000), data.substr(600000, 1000));               // further on
  EXPECT_EQ(Read(src, 200000, 1000), data.substr(200000, 1000));               // backward: restarts
  EXPECT_EQ(Read(src, 0, data.size()), data);
  EXPECT_HAS(ErrorOf([&] { Read(src, data.size() - 4, 8); }), "past the end of the decompressed item");
}

TEST(ZstdStream, ReadsAgainAfterReleasingTheDecoder) {
  const std::string data = Data(600000, 7);
  const std::string frame = OneShot(data);
  auto file = std::make_shared<StringSource>(frame);
  ZstdSource src(file, 0, frame.size(), "item");
  src.ReleaseAfter(400000);
  EXPECT_EQ(Read(src, 100000, 300000), data.substr(100000, 300000));  // reaches 400000: released
  const int reads = file->reads_;
  EXPECT_EQ(Read(src, 300000, 10), data.substr(300000, 10));  // starts over from the first byte
  EXPECT_GT(file->reads_, reads);
  EXPECT_EQ(Read(src, 300010, 10), data.substr(300010, 10));  // and goes on from there
  EXPECT_EQ(src.Size(), data.size());
  EXPECT_EQ(Read(src, 0, data.size()), data);
}

TEST(ZstdStream, ReadsBeforeSizeAndEmptyAndSeveralFrames) {
  const std::string a = Data(300000, 3), b = Data(200000, 4);
  const std::string frames = OneShot(a) + OneShot(b) + OneShot("");
  auto file = std::make_shared<StringSource>(frames);
  ZstdSource src(file, 0, frames.size(), "item");
  EXPECT_EQ(Read(src, 299990, 20), (a + b).substr(299990, 20));  // across the frames
  EXPECT_EQ(src.Size(), a.size() + b.size());
  EXPECT_EQ(Read(src, 0, a.size() + b.size()), a + b);

  const std::string empty = OneShot("");
  ZstdSource none(std::make_shared<StringSource>(empty), 0, empty.size(), "item");
  EXPECT_EQ(none.Size(), 0u);
}

TEST(ZstdStream, CorruptAndTruncatedDataNameTheItem) {
  const std::string data = Data(1 << 20, 5);
  std::string frame = OneShot(data);
  {
    ZstdSource src(std::make_shared<StringSource>(frame), 0, frame.size() / 2, "key 'w' in D/F");
    EXPECT_HAS(ErrorOf([&] { src.Size(); }), "key 'w' in D/F: the zstd stream is truncated");
  }
  frame[frame.size() / 2] ^= 0x55;
  frame[frame.size() / 2 + 1] ^= 0x55;
  {
    ZstdSource src(std::make_shared<StringSource>(frame), 0, frame.size(), "key 'w' in D/F");
    EXPECT_HAS(ErrorOf([&] { Read(src, 0, data.size()); }), "key 'w' in D/F: the zstd data is corrupt");
  }
  const std::string junk = "this is not zstd at all";
  ZstdSource src(std::make_shared<StringSource>(junk), 0, junk.size(), "key 'b' in D/F");
  EXPECT_HAS(ErrorOf([&] { src.Size(); }), "key 'b' in D/F: the zstd data is corrupt");
}

TEST(ZstdStream, ChecksumCatchesCorruptionThatDecodes) {
  // ZstdCompressRange writes a content checksum: flipping a literal byte fails it.
  StringSource src(Data(4096, 6));
  StringSink sink;
  const uint64_t n = ZstdCompressRange(src, 0, 4096, sink, 0, 1, "item");
  std::string frame = sink.s;
  frame[n - 1] ^= 1;  // inside the 4-byte checksum at the end
  ZstdSource bad(std::make_shared<StringSource>(frame), 0, n, "key 'k' in D/F");
  EXPECT_HAS(ErrorOf([&] { bad.Size(); }), "key 'k' in D/F: the zstd data is corrupt");
}

}  // namespace
}  // namespace dcpp
