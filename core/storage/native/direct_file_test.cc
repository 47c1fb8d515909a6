#include "core/storage/native/direct_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/base/error.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::TempDir;

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The directory holds a file system that allows O_DIRECT (the test's temporary folder
// usually does; a tmpfs may not): otherwise the tests below check the fallback only.
std::unique_ptr<FileSource> OpenOrSkip(const std::string& path, DirectBuffer* buf) {
  std::string why;
  std::unique_ptr<FileSource> f = OpenDirect(path, buf, &why);
  if (!f) {
    EXPECT_NE(why.find(path), std::string::npos) << why;
    EXPECT_NE(why.find("refuses O_DIRECT"), std::string::npos) << why;
  }
  return f;
}

// Any offset and length, across window boundaries and up to the unaligned end of the file,
// reads the file's bytes into any (unaligned) destination.
TEST(DirectFile, ReadsAnyRangeIntoUnalignedMemory) {
  TempDir dir;
  const std::string path = dir.path() + "/data";
  const std::string bytes = RandomBytes(3 * 65536 + 1234, 1);
  WriteFile(path, bytes);
  DirectBuffer buf(65536);  // a small window, so that reads cross it
  auto f = OpenOrSkip(path, &buf);
  if (!f) GTEST_SKIP() << "no O_DIRECT in " << dir.path();
  EXPECT_EQ(f->Size(), bytes.size());
  std::mt19937 rng(2);
  for (int i = 0; i < 300; ++i) {
    const size_t off = rng() % bytes.size();
    const size_t len = rng() % std::min<size_t>(bytes.size() - off + 1, 200000);
    std::string got(len + 1, '\0');
    f->ReadAt(off, got.data() + 1, len);  // +1: never aligned
    ASSERT_EQ(got.substr(1), bytes.substr(off, len)) << off << " " << len;
  }
  // The whole file in one call, larger than the window.
  std::string all(bytes.size(), '\0');
  f->ReadAt(0, all.data(), all.size());
  EXPECT_EQ(all, bytes);
}

// Two files sharing one buffer, read alternately, each get their own bytes.
TEST(DirectFile, FilesSharingABufferDoNotMix) {
  TempDir dir;
  const std::string a = RandomBytes(100000, 3), b = RandomBytes(70001, 4);
  WriteFile(dir.path() + "/a", a);
  WriteFile(dir.path() + "/b", b);
  DirectBuffer buf(8192);
  auto fa = OpenOrSkip(dir.path() + "/a", &buf);
  if (!fa) GTEST_SKIP() << "no O_DIRECT in " << dir.path();
  auto fb = OpenDirect(dir.path() + "/b", &buf, nullptr);
  for (size_t off = 0; off + 5000 <= b.size(); off += 5000) {
    std::string x(5000, '\0'), y(5000, '\0');
    fa->ReadAt(off, x.data(), x.size());
    fb->ReadAt(off, y.data(), y.size());
    ASSERT_EQ(x, a.substr(off, 5000)) << off;
    ASSERT_EQ(y, b.substr(off, 5000)) << off;
  }
  fa.reset();  // the window it held is given up
  std::string y(100, '\0');
  fb->ReadAt(b.size() - 100, y.data(), y.size());
  EXPECT_EQ(y, b.substr(b.size() - 100));
}

TEST(DirectFile, ReadingPastTheEndNamesTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/short";
  WriteFile(path, RandomBytes(5000, 5));
  DirectBuffer buf;
  auto f = OpenOrSkip(path, &buf);
  if (!f) GTEST_SKIP() << "no O_DIRECT in " << dir.path();
  std::string got(100, '\0');
  try {
    f->ReadAt(4950, got.data(), got.size());
    FAIL() << "read past the end";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + " is truncated"), std::string::npos) << e.what();
  }
}

TEST(DirectFile, RefusesLinksAndMissingFilesWithTheirPath) {
  TempDir dir;
  WriteFile(dir.path() + "/real", "x");
  std::filesystem::create_symlink(dir.path() + "/real", dir.path() + "/link");
  DirectBuffer buf;
  std::string why;
  for (const std::string name : {"link", "missing"}) {
    const std::string path = dir.path() + "/" + name;
    try {
      OpenDirect(path, &buf, &why);
      FAIL() << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cannot open " + path), std::string::npos) << e.what();
    }
  }
}

// On a tmpfs (where Linux before 6.6 refuses O_DIRECT) OpenDirect either works or says why,
// and never throws.
TEST(DirectFile, TmpfsEitherWorksOrFallsBackWithAReason) {
  if (!std::filesystem::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const std::string path = "/dev/shm/dcpp_direct_file_test_" + std::to_string(::getpid());
  const std::string bytes = RandomBytes(10000, 6);
  WriteFile(path, bytes);
  DirectBuffer buf;
  std::string why;
  auto f = OpenDirect(path, &buf, &why);
  if (f) {
    std::string got(bytes.size(), '\0');
    f->ReadAt(0, got.data(), got.size());
    EXPECT_EQ(got, bytes);
    EXPECT_TRUE(why.empty());
  } else {
    EXPECT_NE(why.find(path), std::string::npos) << why;
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dcpp
