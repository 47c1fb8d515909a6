// Batched reads: every request gets its own bytes whatever the mode (preadv, io_uring, the
// FileSource default, io_uring refused), whatever the layout of the requests (scattered, near,
// adjacent, unsorted, empty), also when every system call reads only part of what it asked;
// a request past the end or a file that shrank is an error naming the file.
#include "core/storage/batch_read.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "core/storage/env.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::TempDir;
using testing::WriteFile;

constexpr size_t kFileBytes = 1 << 20;

std::string Pattern() {
  std::mt19937 rng(17);
  std::string s(kFileBytes, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

struct Span {
  uint64_t offset;
  size_t length;
};

// Request layouts a load asks for.
std::vector<std::vector<Span>> Layouts() {
  std::vector<std::vector<Span>> all;
  std::vector<Span> strided;  // reshard: one 4 KiB run per 16 KiB row
  for (uint64_t o = 0; o + 4096 <= kFileBytes; o += 16384) strided.push_back({o + 8192, 4096});
  all.push_back(strided);
  std::vector<Span> near;  // short runs with gaps under kReadGapBytes, one preadv
  for (uint64_t o = 100; o + 1000 <= kFileBytes / 4; o += 1033) near.push_back({o, 1000});
  all.push_back(near);
  std::vector<Span> many_near;  // more than IOV_MAX iovecs in one span
  for (uint64_t o = 0; o + 100 <= kFileBytes / 2; o += 102) many_near.push_back({o, 100});
  all.push_back(many_near);
  all.push_back({{0, 1000}, {1000, 24}, {1024, 3000}});  // adjacent
  all.push_back({{900000, 5000}, {7, 11}, {40000, 10}, {20, 5}, {0, 0}, {kFileBytes - 1, 1}, {kFileBytes, 0}});
  all.push_back({{0, kFileBytes}});
  std::vector<Span> mixed;  // near and far, shuffled
  for (uint64_t o = 0; o + 600 <= kFileBytes; o += (o / 600) % 3 == 0 ? 9000 : 700) mixed.push_back({o, 600});
  std::shuffle(mixed.begin(), mixed.end(), std::mt19937(5));
  all.push_back(mixed);
  return all;
}

// A FileSource with only ReadAt: ReadV is FileSource's default.
class PlainSource final : public FileSource {
 public:
  explicit PlainSource(std::unique_ptr<FileSource> in) : in_(std::move(in)) {}
  void ReadAt(uint64_t offset, void* data, size_t length) override { in_->ReadAt(offset, data, length); }
  uint64_t Size() override { return in_->Size(); }

 private:
  std::unique_ptr<FileSource> in_;
};

enum class Way { kPreadv, kIoUring, kIoUringRefused, kAuto, kDefault, kEnvOff, kEnvPreadv, kEnvIoUring, kEnvAuto };
const Way kWays[] = {Way::kPreadv,  Way::kIoUring,   Way::kIoUringRefused, Way::kAuto,       Way::kDefault,
                     Way::kEnvOff, Way::kEnvPreadv, Way::kEnvIoUring,     Way::kEnvAuto};

BatchMode ModeOf(Way way) {
  return way == Way::kPreadv ? BatchMode::kPreadv : way == Way::kAuto ? BatchMode::kAuto : BatchMode::kIoUring;
}

const char* EnvOf(Way way) {
  return way == Way::kEnvOff ? "off" : way == Way::kEnvPreadv ? "preadv" : way == Way::kEnvIoUring ? "io_uring" : "auto";
}

// Reads `reqs` from the file at `path` (opened before `before_read` runs) the way `way` says.
void Read(Way way, const std::string& path, const std::vector<ReadRequest>& reqs,
          const std::function<void()>& before_read = [] {}) {
  auto src = Env::Default()->OpenFile(path);
  before_read();
  internal::g_refuse_io_uring = way == Way::kIoUringRefused;
  switch (way) {
    case Way::kPreadv:
    case Way::kIoUring:
    case Way::kIoUringRefused:
    case Way::kAuto: {
      // The file's own descriptor is private to PosixSource: read through a second one.
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0);
      const std::string err = ErrorOf([&] {
        ReadBatch(fd, path, src->Size(), reqs, ModeOf(way));
      });
      ::close(fd);
      internal::g_refuse_io_uring = false;
      if (err != "(no error)") throw Error(err);
      return;
    }
    case Way::kDefault:
      PlainSource(std::move(src)).ReadV(reqs);
      return;
    default:
      ::setenv("DCPP_READ_BATCH", EnvOf(way), 1);
      const std::string err = ErrorOf([&] { src->ReadV(reqs); });
      ::unsetenv("DCPP_READ_BATCH");
      if (err != "(no error)") throw Error(err);
  }
}

TEST(ReadBatch, EveryRequestGetsItsBytes) {
  TempDir dir;
  const std::string path = dir / "data";
  const std::string bytes = Pattern();
  WriteFile(path, bytes);
  std::cout << "io_uring here: " << (IoUringAvailable() ? "yes" : "no (refused: the tests cover the fallback)")
            << "\n";
  int layout = 0;
  for (const std::vector<Span>& spans : Layouts()) {
    for (Way way : kWays) {
      for (size_t cap : {size_t{0}, size_t{7}, size_t{5000}}) {
        SCOPED_TRACE(::testing::Message() << "layout " << layout << " way " << static_cast<int>(way) << " cap " << cap);
        std::vector<std::string> out;
        for (const Span& s : spans) out.emplace_back(s.length, '\xee');
        std::vector<ReadRequest> reqs;
        for (size_t i = 0; i < spans.size(); ++i) reqs.push_back({spans[i].offset, out[i].data(), spans[i].length});
        internal::g_read_call_cap = cap;
        Read(way, path, reqs);
        internal::g_read_call_cap = 0;
        for (size_t i = 0; i < spans.size(); ++i) {
          ASSERT_EQ(out[i], bytes.substr(spans[i].offset, spans[i].length)) << "request " << i;
        }
      }
    }
    ++layout;
  }
}

TEST(ReadBatch, PastTheEndNamesTheFile) {
  TempDir dir;
  const std::string path = dir / "short.distcp";
  WriteFile(path, std::string(10000, 'x'));
  for (Way way : kWays) {
    SCOPED_TRACE(static_cast<int>(way));
    std::vector<char> a(100), b(100);
    const std::string err = ErrorOf([&] { Read(way, path, {{0, a.data(), 100}, {9950, b.data(), 100}}); });
    EXPECT_HAS(err, path);
    EXPECT_HAS(err, "truncated");
  }
}

TEST(ReadBatch, AFileThatShrankNamesTheFile) {
  TempDir dir;
  const std::string path = dir / "shrinks.distcp";
  for (Way way : kWays) {
    SCOPED_TRACE(static_cast<int>(way));
    WriteFile(path, std::string(100000, 'y'));
    std::vector<std::vector<char>> out(8, std::vector<char>(1000));
    std::vector<ReadRequest> reqs;
    for (size_t i = 0; i < out.size(); ++i) reqs.push_back({i * 12000, out[i].data(), 1000});  // scattered
    reqs.push_back({97000, nullptr, 0});
    std::vector<char> n1(500), n2(500);
    reqs.push_back({98000, n1.data(), 500});  // near: one preadv
    reqs.push_back({98600, n2.data(), 500});
    const std::string err =
        ErrorOf([&] { Read(way, path, reqs, [&] { ASSERT_EQ(::truncate(path.c_str(), 50000), 0); }); });
    EXPECT_HAS(err, path);
    EXPECT_HAS(err, "unexpected end of file");
  }
}

TEST(ReadBatch, AutoReadsFilesInMemoryWithoutIoUring) {
  const std::string path = "/dev/shm/dcpp_batch_read_test_" + std::to_string(::getpid());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) GTEST_SKIP() << "no /dev/shm here";
  ::unlink(path.c_str());
  EXPECT_EQ(AutoBatchMode(fd), BatchMode::kPreadv);
  ::close(fd);
}

// Strided reads of `bytes` (the file at `path`) through io_uring; whether each got its bytes.
bool StridedReadsAreRight(const std::string& path, const std::string& bytes) {
  std::vector<std::string> out;
  std::vector<ReadRequest> reqs;
  for (uint64_t o = 0; o + 4096 <= bytes.size(); o += 65536) out.emplace_back(4096, '\0');
  for (size_t i = 0; i < out.size(); ++i) reqs.push_back({i * 65536, out[i].data(), 4096});
  Read(Way::kIoUring, path, reqs);
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] != bytes.substr(i * 65536, 4096)) return false;
  }
  return true;
}

TEST(ReadBatch, ReadsStayRightInAChildForkedAfterIoUring) {
  TempDir dir;
  const std::string path = dir / "data";
  const std::string bytes = Pattern();
  WriteFile(path, bytes);
  ASSERT_TRUE(StridedReadsAreRight(path, bytes));  // this thread's ring is set up
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(StridedReadsAreRight(path, bytes) ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_TRUE(StridedReadsAreRight(path, bytes));
}

TEST(ReadBatch, AnUnknownModeIsRefused) {
  TempDir dir;
  WriteFile(dir / "f", "abc");
  auto src = Env::Default()->OpenFile(dir / "f");
  char c;
  ::setenv("DCPP_READ_BATCH", "uring", 1);
  const std::string err = ErrorOf([&] { src->ReadV({{0, &c, 1}}); });
  ::unsetenv("DCPP_READ_BATCH");
  EXPECT_HAS(err, "DCPP_READ_BATCH=uring");
}

}  // namespace
}  // namespace dcpp
