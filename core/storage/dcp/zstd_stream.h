// Zstandard streams for DCP items that PyTorch's `stream.zstd/1` transform compressed
// (torch.distributed.checkpoint._extension.ZStandard): each such item is one or more zstd
// frames, back to back, whose decompressed bytes are the item PyTorch would otherwise have
// stored (a torch.save archive, or a bytes item's raw bytes); the item's _StorageInfo
// offset and length are those of the compressed bytes.
//
//  - ZstdSource serves the decompressed bytes of a compressed byte range as a FileSource,
//    decompressing front to back in bounded memory: a read behind the decoder's position
//    (other than in the first and last 4 KiB, which it keeps) starts over from the first
//    compressed byte. Size() decompresses the whole range once to count. The decoder (~0.3
//    MiB) exists only between reads that continue one another: it is freed at the end of the
//    stream and after a read reaching ReleaseAfter(), so an idle source holds ~8 KiB (the
//    engine keeps every source it opened until the end of a load).
//  - ZstdCompressRange compresses a byte range of one file into another, in blocks, as one
//    frame that records its content size and a content checksum.
//
// Errors are dcpp::Error naming `where` (key, file and item) and zstd's own reason.
// Thread-safety: a ZstdSource is used by one thread at a time, like every FileSource.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/storage/storage.h"

namespace dcpp {

// PyTorch's descriptor of the transform, as _StorageInfo.transform_descriptors holds it.
constexpr char kZstdDescriptor[] = "stream.zstd/1";

class ZstdSource final : public FileSource {
 public:
  // The compressed bytes are [offset, offset + length) of `file`, which is shared (the
  // metadata reader keeps one source per file).
  ZstdSource(std::shared_ptr<FileSource> file, uint64_t offset, uint64_t length, std::string where);
  ~ZstdSource() override;
  void ReadAt(uint64_t offset, void* data, size_t length) override;
  uint64_t Size() override;
  // After a read that reaches `end` (the end of what the caller will read, e.g. a tensor's
  // storage), the decoder is freed; a later read starts over. 0 (default): only at the end.
  void ReleaseAfter(uint64_t end) { release_after_ = end; }

 private:
  struct Decoder;
  // Decodes up to `end` (or the end of the stream), copying what lies in [want, want + n)
  // into `out`; returns false if the stream ended first.
  bool DecodeTo(uint64_t end, uint64_t want, char* out, size_t n);
  void Restart();

  std::shared_ptr<FileSource> file_;
  uint64_t offset_, length_;
  std::string where_;
  std::unique_ptr<Decoder> d_;  // null while idle
  uint64_t release_after_ = 0;
  std::string head_;            // the first decompressed bytes (up to kKeep)
  std::string tail_;            // the last decompressed bytes, once the end was reached
  uint64_t size_ = 0;           // decompressed size, once known
  bool size_known_ = false;
};

// The content size that the header of the zstd frame at `offset` of `src` (`length` bytes
// available) records; ~0 when it records none or is no frame header.
uint64_t ZstdFrameContentSize(FileSource& src, uint64_t offset, uint64_t length);

// Compresses [offset, offset + length) of `src` and writes the frame to `out` from
// `out_offset` on; returns its length in bytes. `level`: zstd's (3 is its default).
uint64_t ZstdCompressRange(FileSource& src, uint64_t offset, uint64_t length, FileSink& out,
                           uint64_t out_offset, int level, const std::string& where);

}  // namespace dcpp
