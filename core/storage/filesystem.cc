#include "core/storage/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/proto/metadata.pb.h"

namespace dcpp {
namespace {

constexpr char kMetadata[] = ".metadata";
constexpr char kMetadataTmp[] = ".metadata.tmp";

std::string Errno() { return std::strerror(errno); }

void FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  DCPP_CHECK(fd >= 0, "cannot open ", path, " to sync it: ", Errno());
  const int rc = ::fsync(fd);
  const std::string err = Errno();
  ::close(fd);
  DCPP_CHECK(rc == 0, "fsync ", path, ": ", err);
}

void MakeDirs(const std::string& dir) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    cur = dir.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
      throw Error(StrCat("cannot create checkpoint folder ", cur, ": ", Errno()));
    }
  }
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  return names;
}

// "__<rank>_<n>.distcp" -> n, or -1.
long DataFileNumber(const std::string& name) {
  long rank = 0, n = -1;
  return ParseDataFileName(name, &rank, &n) ? n : -1;
}

class PosixSink final : public FileSink {
 public:
  PosixSink(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixSink() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void WriteAt(uint64_t offset, const void* data, size_t length) override {
    const char* p = static_cast<const char*>(data);
    while (length > 0) {
      const ssize_t n = ::pwrite(fd_, p, length, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      DCPP_CHECK(n > 0, "write ", path_, " at offset ", offset, ": ",
                 n < 0 ? Errno() : std::string("no progress"));
      p += n;
      offset += static_cast<uint64_t>(n);
      length -= static_cast<size_t>(n);
    }
  }
  void Finish() override {
    DCPP_CHECK(::fsync(fd_) == 0, "fsync ", path_, ": ", Errno());
    const int rc = ::close(fd_);
    fd_ = -1;
    DCPP_CHECK(rc == 0, "close ", path_, ": ", Errno());
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
    DCPP_CHECK(offset + length <= size_, path_, " is truncated: need bytes [", offset, ", ",
               offset + length, ") but the file has ", size_);
    char* p = static_cast<char*>(data);
    while (length > 0) {
      const ssize_t n = ::pread(fd_, p, length, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      DCPP_CHECK(n > 0, "read ", path_, " at offset ", offset, ": ",
                 n < 0 ? Errno() : std::string("unexpected end of file (truncated)"));
      p += n;
      offset += static_cast<uint64_t>(n);
      length -= static_cast<size_t>(n);
    }
  }
  uint64_t Size() override { return size_; }

 private:
  std::string path_;
  int fd_;
  uint64_t size_;
};

}  // namespace

bool ParseDataFileName(const std::string& name, long* rank, long* n) {
  // "__<rank>_<n>.distcp", both plain decimal numbers that fit in a long (no sign, no spaces:
  // sscanf's %lu would take "-1" and saturate on overflow).
  constexpr char kSuffix[] = ".distcp";
  const size_t suffix = sizeof(kSuffix) - 1;
  if (name.size() <= 2 + suffix || name.compare(0, 2, "__") != 0 ||
      name.compare(name.size() - suffix, suffix, kSuffix) != 0) {
    return false;
  }
  const char* p = name.data() + 2;
  const char* last = name.data() + name.size() - suffix;
  long r = 0, k = 0;
  auto digit = [](const char* c) { return *c >= '0' && *c <= '9'; };
  if (p == last || !digit(p)) return false;
  auto a = std::from_chars(p, last, r);
  if (a.ec != std::errc() || a.ptr == last || *a.ptr != '_' || a.ptr + 1 == last || !digit(a.ptr + 1)) {
    return false;
  }
  auto b = std::from_chars(a.ptr + 1, last, k);
  if (b.ec != std::errc() || b.ptr != last) return false;
  *rank = r;
  *n = k;
  return true;
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos && name.find('\\') == std::string::npos;
}

// ---- writer ----

FileSystemWriter::FileSystemWriter(std::string dir) : dir_(std::move(dir)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

void FileSystemWriter::Begin() {
  MakeDirs(dir_);
  ::unlink((dir_ + "/" + kMetadataTmp).c_str());
}

int FileSystemWriter::FirstFreeFileIndex() {
  long max_n = -1;
  for (const std::string& name : ListDir(dir_)) max_n = std::max(max_n, DataFileNumber(name));
  return static_cast<int>(max_n + 1);
}

bool FileSystemWriter::HasCommitted() {
  return ::access((dir_ + "/" + kMetadata).c_str(), F_OK) == 0;
}

std::vector<std::string> FileSystemWriter::CommittedFiles() {
  std::vector<std::string> files;
  FileSystemReader reader(dir_);
  std::string bytes;
  try {
    bytes = reader.ReadMetadata();
  } catch (const Error&) {
    return files;  // no committed checkpoint
  }
  proto::Metadata md;
  if (!md.ParseFromString(bytes)) return files;
  std::set<std::string> seen;
  for (const auto& t : md.tensors()) {
    for (const auto& c : t.chunks()) seen.insert(c.file());
  }
  for (const auto& b : md.bytes()) seen.insert(b.file());
  return {seen.begin(), seen.end()};
}

std::unique_ptr<FileSink> FileSystemWriter::Open(const std::string& name) {
  DCPP_CHECK(IsPlainFileName(name), "refusing data file name '", name, "' (not a plain file name)");
  const std::string path = dir_ + "/" + name;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  DCPP_CHECK(fd >= 0, "cannot create ", path, ": ", Errno());
  return std::make_unique<PosixSink>(path, fd);
}

void FileSystemWriter::Commit(const std::string& metadata, const std::vector<std::string>& keep) {
  const std::string tmp = dir_ + "/" + kMetadataTmp;
  {
    auto sink = Open(kMetadataTmp);
    sink->WriteAt(0, metadata.data(), metadata.size());
    sink->Finish();
  }
  // The data files were fsynced by their writers; their directory entries must be durable
  // before the metadata that names them.
  FsyncPath(dir_, true);
  DCPP_CHECK(::rename(tmp.c_str(), (dir_ + "/" + kMetadata).c_str()) == 0, "cannot commit ",
             dir_, "/", kMetadata, ": ", Errno());
  // Committed: from here on nothing may throw, since the caller would roll back files that
  // the new metadata uses. A failed directory sync only weakens durability after a crash.
  try {
    FsyncPath(dir_, true);
  } catch (const Error&) {
  }
  // Remove what the new checkpoint does not use.
  const std::set<std::string> kept(keep.begin(), keep.end());
  for (const std::string& name : ListDir(dir_)) {
    if (DataFileNumber(name) >= 0 && !kept.count(name)) ::unlink((dir_ + "/" + name).c_str());
  }
}

void FileSystemWriter::Abort(const std::vector<std::string>& created) {
  for (const std::string& name : created) {
    if (IsPlainFileName(name)) ::unlink((dir_ + "/" + name).c_str());
  }
}

// ---- reader ----

FileSystemReader::FileSystemReader(std::string dir) : dir_(std::move(dir)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

std::string FileSystemReader::ReadMetadata() {
  const std::string path = dir_ + "/" + kMetadata;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(errno == ENOENT ? StrCat("no checkpoint in ", dir_, ": ", path, " is missing")
                               : StrCat("cannot open ", path, ": ", Errno()));
  }
  struct stat st;
  ::fstat(fd, &st);
  PosixSource src(path, fd, static_cast<uint64_t>(st.st_size));
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  src.ReadAt(0, bytes.data(), bytes.size());
  return bytes;
}

std::unique_ptr<FileSource> FileSystemReader::Open(const std::string& name) {
  DCPP_CHECK(IsPlainFileName(name), "checkpoint ", dir_, " names data file '", name,
             "', which is not a plain file name inside the folder");
  const std::string path = dir_ + "/" + name;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DCPP_CHECK(fd >= 0, "cannot open data file ", path, ": ", Errno());
  struct stat st;
  ::fstat(fd, &st);
  return std::make_unique<PosixSource>(path, fd, static_cast<uint64_t>(st.st_size));
}

}  // namespace dcpp
