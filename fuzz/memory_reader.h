// In-memory storage for the fuzz targets: a FileSource over a string, and a StorageReader whose
// every data file holds the same bytes (so one fuzz input can stand for a whole checkpoint).
// Reads past the end throw dcpp::Error as a real file's would. Not thread-safe beyond what the
// engine needs (Open from several threads is fine: the bytes are never modified).
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "core/base/error.h"
#include "core/storage/storage.h"

namespace dcpp::fuzz {

class MemorySource final : public FileSource {
 public:
  explicit MemorySource(const std::string& bytes) : bytes_(bytes) {}
  void ReadAt(uint64_t offset, void* data, size_t length) override {
    DCPP_CHECK(offset <= bytes_.size() && length <= bytes_.size() - offset, "memory file is truncated: need bytes [",
               offset, ", +", length, ") of ", bytes_.size());
    if (length > 0) std::memcpy(data, bytes_.data() + offset, length);
  }
  uint64_t Size() override { return bytes_.size(); }

 private:
  const std::string& bytes_;
};

class MemoryReader final : public StorageReader {
 public:
  // `metadata` and `data` must outlive the reader.
  MemoryReader(const std::string& metadata, const std::string& data) : metadata_(metadata), data_(data) {}
  std::string ReadMetadata() override { return metadata_; }
  std::unique_ptr<FileSource> Open(const std::string& name) override {
    return std::make_unique<MemorySource>(data_);
  }
  std::string Describe() const override { return "fuzz"; }

 private:
  const std::string& metadata_;
  const std::string& data_;
};

// Splits a fuzz input into two parts: a 2-byte little-endian length n, then n bytes (the first
// part, clamped to what is there), then the rest.
inline std::pair<std::string, std::string> SplitInput(const uint8_t* data, size_t size) {
  if (size < 2) return {std::string(reinterpret_cast<const char*>(data), size), ""};
  const size_t n = std::min<size_t>(data[0] | (size_t{data[1]} << 8), size - 2);
  const char* p = reinterpret_cast<const char*>(data) + 2;
  return {std::string(p, n), std::string(p + n, size - 2 - n)};
}

}  // namespace dcpp::fuzz
