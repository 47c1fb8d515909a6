#include "core/storage/native/direct_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/base/error.h"

namespace dcpp {

DirectBuffer::DirectBuffer(size_t bytes)
    : capacity_(std::max(kDirectAlign, (bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign)) {}

DirectBuffer::~DirectBuffer() { std::free(data_); }

class DirectSource final : public FileSource {
 public:
  DirectSource(std::string path, int fd, uint64_t size, DirectBuffer* buffer)
      : path_(std::move(path)), fd_(fd), size_(size), buf_(buffer) {}
  ~DirectSource() override {
    if (buf_->owner_ == this) buf_->owner_ = nullptr;
    ::close(fd_);
  }

  void ReadAt(uint64_t offset, void* data, size_t length) override {
    DCPP_CHECK(offset <= size_ && length <= size_ - offset, path_, " is truncated: need bytes [", offset, ", ",
               offset + length, ") but the file has ", size_);
    char* out = static_cast<char*>(data);
    while (length > 0) {
      if (buf_->owner_ != this || offset < buf_->start_ || offset >= buf_->start_ + buf_->valid_) Fill(offset);
      const size_t at = static_cast<size_t>(offset - buf_->start_);
      const size_t n = std::min(length, buf_->valid_ - at);
      std::memcpy(out, buf_->data_ + at, n);
      out += n;
      offset += n;
      length -= n;
    }
  }

  uint64_t Size() override { return size_; }

 private:
  // Loads the window that holds `offset`: one aligned read of up to the buffer's capacity.
  void Fill(uint64_t offset) {
    if (buf_->data_ == nullptr) {
      buf_->data_ = static_cast<char*>(std::aligned_alloc(kDirectAlign, buf_->capacity_));
      if (buf_->data_ == nullptr) throw std::bad_alloc();
    }
    buf_->owner_ = nullptr;  // invalid until the read succeeds
    const uint64_t start = offset / kDirectAlign * kDirectAlign;
    ssize_t n;
    while ((n = ::pread(fd_, buf_->data_, buf_->capacity_, static_cast<off_t>(start))) < 0 && errno == EINTR) {
    }
    DCPP_CHECK(n >= 0, "read ", path_, " at offset ", start, " (O_DIRECT): ", std::strerror(errno));
    DCPP_CHECK(static_cast<uint64_t>(n) > offset - start, "read ", path_, " at offset ", offset,
               ": unexpected end of file (truncated)");
    buf_->owner_ = this;
    buf_->start_ = start;
    buf_->valid_ = static_cast<size_t>(n);
  }

  std::string path_;
  int fd_;
  uint64_t size_;
  DirectBuffer* buf_;
};

std::unique_ptr<FileSource> OpenDirect(const std::string& path, DirectBuffer* buffer, std::string* why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == EINVAL) {  // the file system has no O_DIRECT (tmpfs before Linux 6.6, some FUSE)
      *why = StrCat(path, " was read through the page cache: its file system refuses O_DIRECT");
      return nullptr;
    }
    DCPP_CHECK(err != ELOOP, "cannot open ", path, ": it is a symbolic link, and dcpp does not follow links "
               "inside a checkpoint");
    throw Error(StrCat("cannot open ", path, ": ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(StrCat("cannot open ", path, ": not a regular file"));
  }
  return std::make_unique<DirectSource>(path, fd, static_cast<uint64_t>(st.st_size), buffer);
}

}  // namespace dcpp
