#include "core/storage/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "core/base/error.h"
#include "core/storage/batch_read.h"

namespace dcpp {
namespace {

std::string Errno(int err) { return std::strerror(err); }

class PosixSink final : public FileSink {
 public:
  PosixSink(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixSink() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void WriteAt(uint64_t offset, const void* data, size_t length) override {
    DCPP_CHECK(fd_ >= 0, "write ", path_, ": the file is already closed");
    const char* p = static_cast<const char*>(data);
    while (length > 0) {
      const ssize_t n = ::pwrite(fd_, p, length, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      DCPP_CHECK(n > 0, "write ", path_, " at offset ", offset, ": ",
                 n < 0 ? Errno(errno) : std::string("no progress"));
      p += n;
      offset += static_cast<uint64_t>(n);
      length -= static_cast<size_t>(n);
    }
  }
  void Finish() override {
    DCPP_CHECK(fd_ >= 0, "sync ", path_, ": the file is already closed");
    int rc;
    while ((rc = ::fsync(fd_)) != 0 && errno == EINTR) {
    }
    const int sync_err = errno;
    const int close_rc = ::close(fd_);
    const int close_err = errno;
    fd_ = -1;
    DCPP_CHECK(rc == 0, "fsync ", path_, ": ", Errno(sync_err));
    DCPP_CHECK(close_rc == 0, "close ", path_, ": ", Errno(close_err));
  }

 private:
  std::string path_;
  int fd_;
};

class PosixSource final : public FileSource {
 public:
  PosixSource(std::string path, int fd, uint64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}
  ~PosixSource() override { ::close(fd_); }
  void ReadAt(uint64_t offset, void* data, size_t length) override {
    DCPP_CHECK(offset <= size_ && length <= size_ - offset, path_, " is truncated: need bytes [",
               offset, ", ", offset + length, ") but the file has ", size_);
    PreadExactly(fd_, path_, offset, data, length);
  }
  void ReadV(const std::vector<ReadRequest>& requests) override {
    BatchMode mode = BatchModeFromEnv();
    if (mode == BatchMode::kOff) return FileSource::ReadV(requests);
    if (mode == BatchMode::kAuto) {
      if (!auto_mode_) auto_mode_ = AutoBatchMode(fd_);
      mode = *auto_mode_;
    }
    ReadBatch(fd_, path_, size_, requests, mode);
  }
  uint64_t Size() override { return size_; }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
  std::optional<BatchMode> auto_mode_;  // what kAuto means for this file, once asked
};

// Released by removing the lock file while still holding it, then closing: a waiter that got
// the lock on the removed file sees that the path no longer leads to it and tries again, so
// the folder is left without a lock file and two holders can never overlap.
class PosixLock final : public FileLock {
 public:
  PosixLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixLock() override {
    ::unlink(path_.c_str());
    ::close(fd_);  // releases the flock
  }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  std::unique_ptr<FileSink> NewFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int err = errno;
      throw Error(err == EEXIST ? StrCat("cannot create ", path, ": it already exists (dcpp never "
                                         "writes into an existing file)")
                                : StrCat("cannot create ", path, ": ", Errno(err)));
    }
    return std::make_unique<PosixSink>(path, fd);
  }

  std::unique_ptr<FileSource> OpenFile(const std::string& path) override { return Open(path, O_NOFOLLOW); }
  std::unique_ptr<FileSource> OpenFileFollowingLinks(const std::string& path) override { return Open(path, 0); }

  std::unique_ptr<FileSource> Open(const std::string& path, int flags) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    const int fd = ::open(path.c_str(), O_RDONLY | flags | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ELOOP) {
        throw Error(StrCat("cannot open ", path, ": it is a symbolic link, and dcpp does not "
                           "follow links inside a checkpoint"));
      }
      throw Error(StrCat("cannot open ", path, ": ", Errno(err)));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error(StrCat("cannot open ", path, ": not a regular file"));
    }
    return std::make_unique<PosixSource>(path, fd, static_cast<uint64_t>(st.st_size));
  }

  void Rename(const std::string& from, const std::string& to) override {
    DCPP_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename ", from, " to ", to, ": ",
               Errno(errno));
  }

  void Remove(const std::string& path) override {
    DCPP_CHECK(::unlink(path.c_str()) == 0 || errno == ENOENT, "cannot remove ", path, ": ",
               Errno(errno));
  }

  void SyncDir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    DCPP_CHECK(fd >= 0, "cannot open folder ", dir, " to sync it: ", Errno(errno));
    int rc;
    while ((rc = ::fsync(fd)) != 0 && errno == EINTR) {
    }
    const int err = errno;
    ::close(fd);
    DCPP_CHECK(rc == 0, "fsync of folder ", dir, ": ", Errno(err));
  }

  std::vector<std::string> List(const std::string& dir) override {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
      DCPP_CHECK(errno == ENOENT, "cannot list folder ", dir, ": ", Errno(errno));
      return names;
    }
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    return names;
  }

  bool Exists(const std::string& path) override {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
  }

  void CreateDirs(const std::string& dir) override {
    std::string cur;
    size_t pos = 0;
    while (pos != std::string::npos) {
      pos = dir.find('/', pos + 1);
      cur = dir.substr(0, pos);
      if (cur.empty()) continue;
      if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
        throw Error(StrCat("cannot create folder ", cur, ": ", Errno(errno)));
      }
    }
    struct stat st;
    DCPP_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), dir, " is not a folder");
  }

  std::unique_ptr<FileLock> Lock(const std::string& path, bool wait, const std::string& what) override {
    for (;;) {
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
      DCPP_CHECK(fd >= 0, "cannot open the lock file ", path, ": ", Errno(errno));
      int rc;
      while ((rc = ::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB))) != 0 && errno == EINTR) {
      }
      if (rc != 0) {
        const int err = errno;
        ::close(fd);
        if (err == EWOULDBLOCK) {
          throw Error(StrCat(what, " is locked by another save, convert or export writing into it (lock file ",
                             path, "); wait for it to finish, or ask to wait (wait_for_lock, --wait-for-lock)"));
        }
        throw Error(StrCat("cannot lock ", path, ": ", Errno(err)));
      }
      // Still the file at `path`? (Its last holder may have removed it meanwhile.)
      struct stat held, now;
      if (::fstat(fd, &held) == 0 && ::lstat(path.c_str(), &now) == 0 && held.st_dev == now.st_dev &&
          held.st_ino == now.st_ino) {
        return std::make_unique<PosixLock>(path, fd);
      }
      ::close(fd);
    }
  }
};

}  // namespace

Env* Env::Default() {
  static Env* env = new PosixEnv;  // never deleted: used until the program ends
  return env;
}

std::string ReadWholeFile(Env* env, const std::string& path) {
  auto src = env->OpenFile(path);
  std::string bytes(static_cast<size_t>(src->Size()), '\0');
  src->ReadAt(0, bytes.data(), bytes.size());
  return bytes;
}

}  // namespace dcpp
