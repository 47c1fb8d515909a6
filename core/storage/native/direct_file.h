// Direct reads: a data file read with O_DIRECT, bypassing the page cache, through an aligned
// buffer (LoadOptions::direct_io). A cold load from a disk then moves the file in large
// requests the device serves at once, instead of the kernel's readahead windows, and leaves
// no copy of the checkpoint in the page cache.
//
// O_DIRECT needs the file offset, the length and the memory address of every read aligned to
// the device's block; a DirectBuffer is that aligned memory, filled kDirectBufferBytes at a time
// from an aligned offset, and ReadAt copies out of it whatever the caller's offset, length and
// destination. The buffer is shared by the files one reader thread opens (one window at a time),
// so host memory grows by one buffer per thread, not per file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/storage/storage.h"

namespace dcpp {

// Bytes each direct read fills: on the disk measured, 4 MiB requests read a cold file ~2x faster
// than buffered 256 KiB reads, and faster than 1 MiB (~1.3x) or 16 MiB requests.
constexpr size_t kDirectBufferBytes = size_t{4} << 20;
// The alignment of offsets, lengths and addresses (the largest logical block size in use).
constexpr size_t kDirectAlign = 4096;

class DirectBuffer {
 public:
  explicit DirectBuffer(size_t bytes = kDirectBufferBytes);  // rounded up to kDirectAlign
  ~DirectBuffer();
  DirectBuffer(const DirectBuffer&) = delete;
  DirectBuffer& operator=(const DirectBuffer&) = delete;

 private:
  friend class DirectSource;
  char* data_ = nullptr;  // allocated at the first read
  size_t capacity_;
  const void* owner_ = nullptr;  // the source whose bytes the window holds
  uint64_t start_ = 0;           // file offset of data_[0]
  size_t valid_ = 0;             // bytes of data_ that hold the file
};

// Opens regular file `path` (never through a symbolic link) for reading with O_DIRECT through
// `buffer`, which must outlive the source and is used by one thread at a time. Returns null,
// with the reason in `why`, where the file system refuses O_DIRECT (the caller then reads it
// the ordinary way); any other failure throws dcpp::Error naming the file.
std::unique_ptr<FileSource> OpenDirect(const std::string& path, DirectBuffer* buffer, std::string* why);

}  // namespace dcpp
