// GdsFile (core/storage/gds/gds.h): GdsFile::Open's reasons, and the read loop and error
// messages against fake cuFile entry points. With a GPU (CUDA build): a real read into GPU
// memory, skipped otherwise. The driver is tested in gds_driver_test.cc.
#include "core/storage/gds/gds.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/base/error.h"
#include "core/storage/gds/gds_test_util.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using gds_internal::CufileApi;
using gds_internal::CufileStatus;
using gds_testing::ScopedEnv;
using gds_testing::WriteFile;
using ::testing::HasSubstr;

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 251) & 0xff);
  return s;
}

// --- GdsFile ------------------------------------------------------------------------------------

TEST(GdsFile, OpenOfAMissingPathNamesIt) {
  testing::TempDir dir;
  const std::string path = dir / "__0_0.distcp";
  std::string why;
  EXPECT_EQ(GdsFile::Open(path, &why), nullptr);
  EXPECT_THAT(why, HasSubstr("cannot open " + path));
  EXPECT_THAT(why, HasSubstr(std::strerror(ENOENT)));
}

TEST(GdsFile, OpenWithoutADriverNamesThePathAndTheReason) {
  ScopedEnv gds("DCPP_GDS", std::string("0"));
  testing::TempDir dir;
  const std::string path = dir / "__0_0.distcp";
  WriteFile(path, Pattern(100));
  std::string why;
  EXPECT_EQ(GdsFile::Open(path, &why), nullptr);
  EXPECT_THAT(why, HasSubstr("no GPUDirect Storage for " + path));
  EXPECT_THAT(why, HasSubstr("disabled by DCPP_GDS=0"));
}

// Fake cuFile entry points: the "device" pointer is host memory, the registered handle reads the
// file through an ordinary descriptor (the registered one may be O_DIRECT, which pread into an
// unaligned buffer refuses).
struct Fake {
  std::string path;
  int plain_fd = -1;
  int registered_fd = -1;
  int register_calls = 0;
  int deregister_calls = 0;
  int read_calls = 0;
  size_t max_per_read = 3;
  int fail_on_read = -1;  // this call (0-based) fails with fail_with
  ssize_t fail_with = 0;
  int fail_errno = 0;
  int register_error = 0;
  void* last_handle = nullptr;
};
Fake* g_fake = nullptr;
int g_handle_token;

CufileStatus FakeRegister(void** handle, void* descr) {
  ++g_fake->register_calls;
  struct Descr {
    int type;
    union {
      int fd;
      void* handle;
    } h;
    const void* fs_ops;
  };
  const Descr* d = static_cast<const Descr*>(descr);
  EXPECT_EQ(d->type, 1);  // CU_FILE_HANDLE_TYPE_OPAQUE_FD
  EXPECT_EQ(d->fs_ops, nullptr);
  g_fake->registered_fd = d->h.fd;
  if (g_fake->register_error != 0) return {g_fake->register_error, 0};
  *handle = &g_handle_token;
  return {0, 0};
}

void FakeDeregister(void* handle) {
  EXPECT_EQ(handle, &g_handle_token);
  ++g_fake->deregister_calls;
}

ssize_t FakeRead(void* handle, void* buf, size_t size, off_t file_offset, off_t buf_offset) {
  EXPECT_EQ(handle, &g_handle_token);
  const int call = g_fake->read_calls++;
  if (call == g_fake->fail_on_read) {
    errno = g_fake->fail_errno;
    return g_fake->fail_with;
  }
  const size_t n = std::min(size, g_fake->max_per_read);
  return ::pread(g_fake->plain_fd, static_cast<char*>(buf) + buf_offset, n, file_offset);
}

class GdsFileFake : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_ / "__0_0.distcp";
    bytes_ = Pattern(1000);
    WriteFile(path_, bytes_);
    fake_.path = path_;
    fake_.plain_fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fake_.plain_fd, 0);
    g_fake = &fake_;
    api_.library = "fake";
    api_.handle_register = &FakeRegister;
    api_.handle_deregister = &FakeDeregister;
    api_.read = &FakeRead;
  }
  void TearDown() override {
    ::close(fake_.plain_fd);
    g_fake = nullptr;
  }
  static bool FdOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

  testing::TempDir dir_;
  std::string path_;
  std::string bytes_;
  Fake fake_;
  CufileApi api_;
};

TEST_F(GdsFileFake, ReadLoopsOverShortReadsAndRegistersTheFile) {
  std::string why = "stale";
  std::unique_ptr<GdsFile> f = OpenGdsFileWith(api_, path_, &why);
  ASSERT_NE(f, nullptr) << why;
  EXPECT_EQ(f->path(), path_);
  EXPECT_EQ(why.empty(), f->direct_io()) << why;  // a note only when O_DIRECT was refused
  EXPECT_EQ(fake_.register_calls, 1);
  // The registered descriptor is this file, read-only.
  struct stat a, b;
  ASSERT_EQ(::fstat(fake_.registered_fd, &a), 0);
  ASSERT_EQ(::stat(path_.c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(::fcntl(fake_.registered_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_EQ((::fcntl(fake_.registered_fd, F_GETFL) & O_DIRECT) != 0, f->direct_io());

  std::string got(100, '\0');
  f->Read(got.data(), 100, 17);
  EXPECT_EQ(got, bytes_.substr(17, 100));
  EXPECT_EQ(fake_.read_calls, 34);  // 3 bytes at a time

  fake_.max_per_read = 1 << 20;
  std::string all(bytes_.size(), '\0');
  f->Read(all.data(), all.size(), 0);
  EXPECT_EQ(all, bytes_);
  f->Read(all.data(), 0, 1000);  // nothing to read, even at the end
  EXPECT_EQ(fake_.read_calls, 35);

  const int fd = fake_.registered_fd;
  f.reset();
  EXPECT_EQ(fake_.deregister_calls, 1);
  EXPECT_FALSE(FdOpen(fd));
}

TEST_F(GdsFileFake, ACufileErrorNamesTheFileTheOffsetAndTheError) {
  std::unique_ptr<GdsFile> f = OpenGdsFileWith(api_, path_, nullptr);
  ASSERT_NE(f, nullptr);
  fake_.fail_on_read = 1;
  fake_.fail_with = -5044;  // -CU_FILE_IO_ERROR
  std::string buf(50, '\0');
  try {
    f->Read(buf.data(), 50, 200);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path_));
    EXPECT_THAT(e.what(), HasSubstr("at offset 203"));  // after the first 3 bytes
    EXPECT_THAT(e.what(), HasSubstr("CU_FILE_IO_ERROR (5044)"));
  }
}

TEST_F(GdsFileFake, AnErrnoErrorIsReportedAsSuch) {
  std::unique_ptr<GdsFile> f = OpenGdsFileWith(api_, path_, nullptr);
  ASSERT_NE(f, nullptr);
  fake_.fail_on_read = 0;
  fake_.fail_with = -1;
  fake_.fail_errno = EIO;
  std::string buf(10, '\0');
  try {
    f->Read(buf.data(), 10, 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path_));
    EXPECT_THAT(e.what(), HasSubstr("at offset 0"));
    EXPECT_THAT(e.what(), HasSubstr(std::strerror(EIO)));
  }
}

TEST_F(GdsFileFake, EintrIsRetried) {
  std::unique_ptr<GdsFile> f = OpenGdsFileWith(api_, path_, nullptr);
  ASSERT_NE(f, nullptr);
  fake_.fail_on_read = 2;
  fake_.fail_with = -1;
  fake_.fail_errno = EINTR;
  std::string buf(10, '\0');
  f->Read(buf.data(), 10, 990);
  EXPECT_EQ(buf, bytes_.substr(990));
}

TEST_F(GdsFileFake, ReadingPastTheEndThrows) {
  std::unique_ptr<GdsFile> f = OpenGdsFileWith(api_, path_, nullptr);
  ASSERT_NE(f, nullptr);
  std::string buf(20, '\0');
  try {
    f->Read(buf.data(), 20, 990);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path_));
    EXPECT_THAT(e.what(), HasSubstr("ends at offset 1000"));
  }
}

TEST_F(GdsFileFake, ARefusedRegistrationClosesTheFileAndSaysWhy) {
  fake_.register_error = 5008;  // CU_FILE_IO_NOT_SUPPORTED
  std::string why;
  EXPECT_EQ(OpenGdsFileWith(api_, path_, &why), nullptr);
  EXPECT_THAT(why, HasSubstr("cuFileHandleRegister of " + path_));
  EXPECT_THAT(why, HasSubstr("CU_FILE_IO_NOT_SUPPORTED (5008)"));
  EXPECT_FALSE(FdOpen(fake_.registered_fd));
  EXPECT_EQ(fake_.deregister_calls, 0);
}

TEST_F(GdsFileFake, ODirectWhereTheFilesystemAllowsIt) {
  // What the filesystems here say about O_DIRECT decides what Open must have done.
  for (const std::string& folder : {dir_.path(), std::string("/dev/shm")}) {
    if (::access(folder.c_str(), W_OK) != 0) continue;
    const std::string path = folder + "/dcpp_gds_test_" + std::to_string(::getpid());
    WriteFile(path, bytes_);
    const int probe = ::open(path.c_str(), O_RDONLY | O_DIRECT);
    const bool fs_allows = probe >= 0;
    if (probe >= 0) ::close(probe);
    std::string why;
    std::unique_ptr<GdsFile> f = OpenGdsFileWith(api_, path, &why);
    ASSERT_NE(f, nullptr) << why;
    EXPECT_EQ(f->direct_io(), fs_allows) << folder;
    if (!fs_allows) {
      EXPECT_THAT(why, HasSubstr("without O_DIRECT"));
      EXPECT_THAT(why, HasSubstr(path));
    }
    f.reset();
    ::unlink(path.c_str());
  }
}

// --- On a GPU ------------------------------------------------------------------------------------

TEST(GdsGpu, ReadsAFileRangeIntoGpuMemory) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible (or the CPU build)";
  ScopedEnv gds("DCPP_GDS", std::nullopt);
  std::string why;
  GdsDriver* driver = GdsDriver::Get(&why);
  if (driver == nullptr) GTEST_SKIP() << "GPUDirect Storage unavailable: " << why;
  EXPECT_GE(driver->version(), 1000);
  testing::TempDir dir;
  const std::string path = dir / "__0_0.distcp";
  const std::string bytes = Pattern((1 << 20) + 4321);
  WriteFile(path, bytes);
  std::unique_ptr<GdsFile> f = GdsFile::Open(path, &why);
  ASSERT_NE(f, nullptr) << why;
  const size_t offset = 4096 + 7, n = (1 << 20) - 999;  // unaligned on both ends
  at::Tensor target = at::zeros({static_cast<int64_t>(n)},
                                at::TensorOptions().dtype(at::kByte).device(at::kCUDA));
  f->Read(target.data_ptr(), n, offset);
  const at::Tensor back = target.cpu();
  EXPECT_EQ(std::memcmp(back.data_ptr(), bytes.data() + offset, n), 0);
  EXPECT_THROW(f->Read(target.data_ptr(), n, bytes.size() - 10), Error);
}

}  // namespace
}  // namespace dcpp
