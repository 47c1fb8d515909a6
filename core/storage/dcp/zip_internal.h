// The zip format as torch.save writes it (entries stored, sizes in data descriptors, data
// aligned to 64 bytes, zip64 records when needed), shared by torch_archive's .cc files (not
// part of torch_archive.h's API): signatures, little-endian fields, bounds-checked reads of an
// archive, and the records an archive being written is made of.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/storage.h"

namespace dcpp {
namespace torch_archive {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;
constexpr uint32_t kDescriptorSig = 0x08074b50;
constexpr uint32_t kMax32 = 0xffffffffu;
constexpr uint16_t kFlags = 0x0808;  // sizes in a data descriptor; UTF-8 names (as torch.save)
constexpr uint64_t kAlignment = 64;  // torch.save aligns each entry's data to 64 bytes

inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
inline uint32_t Get32(const uint8_t* p) { return Get16(p) | static_cast<uint32_t>(Get16(p + 2)) << 16; }
inline uint64_t Get64(const uint8_t* p) { return Get32(p) | static_cast<uint64_t>(Get32(p + 4)) << 32; }

inline void Put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}
inline void Put32(std::string& s, uint32_t v) {
  Put16(s, static_cast<uint16_t>(v & 0xffff));
  Put16(s, static_cast<uint16_t>(v >> 16));
}
inline void Put64(std::string& s, uint64_t v) {
  Put32(s, static_cast<uint32_t>(v & kMax32));
  Put32(s, static_cast<uint32_t>(v >> 32));
}

// Reads [begin, begin + n) of the archive, checking it lies inside it.
std::string ReadRange(FileSource& src, uint64_t archive, uint64_t length, uint64_t begin,
                      uint64_t n, const std::string& where, const char* what);

// A FileSource over bytes in memory (for archives already read).
class MemorySource final : public FileSource {
 public:
  explicit MemorySource(const std::string& data) : data_(data.data()), size_(data.size()) {}
  MemorySource(const void* data, size_t size) : data_(static_cast<const char*>(data)), size_(size) {}
  void ReadAt(uint64_t offset, void* out, size_t length) override {
    DCPP_CHECK(offset <= size_ && length <= size_ - offset, "read past the end of an archive in memory");
    if (length > 0) std::memcpy(out, data_ + offset, length);
  }
  uint64_t Size() override { return size_; }

 private:
  const char* data_;
  size_t size_;
};

// "0x" and eight hex digits.
std::string Hex32(uint32_t v);

// Appends a local header for `name` whose data starts at a multiple of 64 (as torch.save).
void LocalHeader(std::string& out, uint64_t archive_pos, const std::string& name, bool zip64);

// Appends a zip data descriptor (signature, CRC-32, sizes) for an entry of `size` bytes.
void Descriptor(std::string& out, uint32_t crc, uint64_t size, bool zip64);

// Appends a small entry (header, data, descriptor) at archive position out.size() + base.
void SmallEntry(std::string& out, uint64_t base, const std::string& name, const std::string& data,
                std::vector<ZipRecord>* records);

// The central directory and end records for `records`, starting at archive position `base`.
std::string Directory(const std::vector<ZipRecord>& records, uint64_t base);

}  // namespace torch_archive
}  // namespace dcpp
