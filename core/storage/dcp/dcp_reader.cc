// DcpReader: a DCP checkpoint folder served as a dcpp checkpoint; sources that check each
// item's CRC-32 as it is read, and that reorder a non-contiguous chunk.
#include "core/storage/dcp/dcp.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/dcp_internal.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/dcp/zstd_stream.h"

namespace dcpp {

struct DcpReader::CrcIndex {
  std::map<std::string, std::vector<DcpCrcRange>> by_file;  // each sorted by offset
};

namespace {

// Checks the CRC-32 of each item of one file as its bytes are read (see
// DcpReader::VerifyOwnChecksums).
class CrcCheckingSource final : public FileSource {
 public:
  CrcCheckingSource(std::unique_ptr<FileSource> inner, std::shared_ptr<const DcpReader::CrcIndex> index,
                    const std::vector<DcpCrcRange>* ranges, std::shared_ptr<std::atomic<int64_t>> checked)
      : inner_(std::move(inner)), index_(std::move(index)), ranges_(*ranges), checked_(std::move(checked)) {}

  void ReadAt(uint64_t offset, void* data, size_t length) override {
    inner_->ReadAt(offset, data, length);
    if (length == 0) return;
    const uint64_t end = offset + length;
    // The first range that ends after `offset`, then every one that begins before `end`.
    auto it = std::upper_bound(ranges_.begin(), ranges_.end(), offset,
                               [](uint64_t o, const DcpCrcRange& r) { return o < r.offset + r.length; });
    for (; it != ranges_.end() && it->offset < end; ++it) {
      Feed(static_cast<size_t>(it - ranges_.begin()), offset, static_cast<const char*>(data), end);
    }
  }
  uint64_t Size() override { return inner_->Size(); }

 private:
  static constexpr uint64_t kLost = ~uint64_t{0};  // read out of order: unchecked until restarted
  struct State {
    uint64_t next = 0;  // bytes of the range hashed so far, in order
    uint32_t crc = 0;
  };

  void Feed(size_t i, uint64_t offset, const char* data, uint64_t end) {
    const DcpCrcRange& r = ranges_[i];
    const uint64_t a = std::max(offset, r.offset), b = std::min(end, r.offset + r.length);
    const char* p = data + (a - offset);
    if (r.archive) {  // a bytes item: checked when it is read in one piece
      if (a == r.offset && b == r.offset + r.length) {
        torch_archive::CheckEntryCrcs(p, r.length, r.what);
        *checked_ += 1;
      }
      return;
    }
    State& s = state_[i];
    if (a == r.offset) s = State{};  // (re)starts at the item's first byte
    if (s.next == kLost || a != r.offset + s.next) {
      s.next = kLost;
      return;
    }
    s.crc = torch_archive::Crc32(p, b - a, s.crc);
    s.next += b - a;
    if (s.next < r.length) return;
    const uint32_t crc = s.crc;
    state_.erase(i);
    char got[11], want[11];
    std::snprintf(got, sizeof got, "0x%08x", crc);
    std::snprintf(want, sizeof want, "0x%08x", r.crc32);
    DCPP_CHECK(crc == r.crc32, r.what, ": the tensor data fails its CRC-32 (recorded ", want,
               ", computed ", got, "): the data file is corrupt");
    *checked_ += 1;
  }

  std::unique_ptr<FileSource> inner_;
  std::shared_ptr<const DcpReader::CrcIndex> index_;  // keeps ranges_ alive
  const std::vector<DcpCrcRange>& ranges_;
  std::shared_ptr<std::atomic<int64_t>> checked_;
  std::map<size_t, State> state_;
};

// Serves a non-contiguous DCP chunk as row-major bytes (materialized on first read).
class StridedSource final : public FileSource {
 public:
  StridedSource(std::unique_ptr<FileSource> file, std::string where, uint64_t offset, uint64_t length)
      : file_(std::move(file)), where_(std::move(where)), offset_(offset), length_(length) {}

  void ReadAt(uint64_t offset, void* data, size_t length) override {
    Materialize();
    DCPP_CHECK(offset <= bytes_.size() && length <= bytes_.size() - offset, where_,
               ": read past the end of the chunk");
    std::memcpy(data, bytes_.data() + offset, length);
  }
  uint64_t Size() override {
    Materialize();
    return bytes_.size();
  }

 private:
  void Materialize() {
    if (done_) return;
    const torch_archive::StoredTensor t = torch_archive::ReadTensorItem(*file_, offset_, length_, where_);
    std::string storage(t.storage_bytes, '\0');
    file_->ReadAt(t.storage_file_offset, storage.data(), storage.size());
    const c10::ScalarType dtype = DtypeFromName(t.dtype);
    const int64_t es = ElementSize(dtype);
    // Reorder as bytes: each element is `es` bytes, a trailing dimension of the view.
    const at::Tensor raw = at::from_blob(storage.data(), {static_cast<int64_t>(storage.size())}, at::kByte);
    std::vector<int64_t> sizes = t.sizes, strides;
    for (int64_t s : t.strides) strides.push_back(s * es);
    sizes.push_back(es);
    strides.push_back(1);
    const at::Tensor dense = raw.as_strided(sizes, strides, t.storage_offset * es).contiguous();
    bytes_.assign(static_cast<const char*>(dense.const_data_ptr()), static_cast<size_t>(dense.numel()));
    done_ = true;
  }

  std::unique_ptr<FileSource> file_;
  std::string where_;
  uint64_t offset_, length_;
  bool done_ = false;
  std::string bytes_;
};

}  // namespace

DcpReader::DcpReader(std::string dir, Env* env) : files_(std::move(dir), env) {}

std::string DcpReader::ReadMetadata() {
  const std::string bytes = files_.ReadMetadata();
  DCPP_CHECK(IsDcpMetadata(bytes), "checkpoint ", files_.Describe(),
             ": .metadata is not a PyTorch DCP pickle");
  std::vector<DcpCrcRange> crcs;
  const std::string md = SerializeMetadata(ReadDcpMetadata(bytes, files_, files_.Describe(), 8, &crcs));
  auto index = std::make_shared<CrcIndex>();
  for (DcpCrcRange& r : crcs) index->by_file[r.file].push_back(std::move(r));
  for (auto& [file, ranges] : index->by_file) {
    std::sort(ranges.begin(), ranges.end(),
              [](const DcpCrcRange& a, const DcpCrcRange& b) { return a.offset < b.offset; });
    // Chunks listed twice point at one item: keep it once. Ranges that overlap otherwise
    // (not what DCP writes) are left unchecked rather than misreported.
    ranges.erase(std::unique(ranges.begin(), ranges.end(),
                             [](const DcpCrcRange& a, const DcpCrcRange& b) {
                               return a.offset == b.offset && a.length == b.length;
                             }),
                 ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].offset < ranges[i - 1].offset + ranges[i - 1].length) {
        ranges.clear();
        break;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  crcs_ = std::move(index);
  return md;
}

void DcpReader::VerifyOwnChecksums(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  verify_ = on;
}

std::string DcpReader::LocalPath(const std::string& name) const {
  return name.find(kStrided) == std::string::npos && name.find(kZstd) == std::string::npos ? files_.LocalPath(name)
                                                                                         : "";
}

namespace {

// "<offset>+<length>" after `mark` in `name`: plain decimal numbers that fit in a uint64 (as
// ResolveChunks wrote them).
bool ParseRange(const std::string& name, size_t mark, uint64_t* offset, uint64_t* length) {
  const char* p = name.data() + mark;
  const char* end = name.data() + name.size();
  const auto a = std::from_chars(p, end, *offset);
  if (a.ec != std::errc() || a.ptr == end || *a.ptr != '+') return false;
  const auto b = std::from_chars(a.ptr + 1, end, *length);
  return b.ec == std::errc() && b.ptr == end;
}

}  // namespace

std::unique_ptr<FileSource> DcpReader::Open(const std::string& name) {
  uint64_t offset = 0, length = 0;
  const size_t strided = name.find(kStrided);
  if (strided != std::string::npos) {  // reorders the item that the name before the mark holds
    DCPP_CHECK(ParseRange(name, strided + std::strlen(kStrided), &offset, &length), "checkpoint ", Describe(),
               ": bad item name '", name, "'");
    const std::string inner = name.substr(0, strided);
    return std::make_unique<StridedSource>(Open(inner), StrCat(Describe(), "/", inner, " (item at byte ", offset, ")"),
                                           offset, length);
  }
  const size_t zstd = name.find(kZstd);
  const std::string file = name.substr(0, zstd);
  std::unique_ptr<FileSource> src = files_.Open(file);
  std::lock_guard<std::mutex> lock(mu_);
  const std::vector<DcpCrcRange>* ranges = nullptr;
  if (crcs_) {
    auto it = crcs_->by_file.find(name);
    if (it != crcs_->by_file.end() && !it->second.empty()) ranges = &it->second;
  }
  if (zstd != std::string::npos) {
    DCPP_CHECK(ParseRange(name, zstd + std::strlen(kZstd), &offset, &length), "checkpoint ", Describe(),
               ": bad item name '", name, "'");
    // Errors name the key the item holds, when the metadata said.
    const std::string where = ranges ? ranges->front().what
                                     : StrCat(Describe(), "/", file, " (zstd-compressed item at byte ", offset, ")");
    auto z = std::make_unique<ZstdSource>(std::shared_ptr<FileSource>(std::move(src)), offset, length, where);
    // Once the item's storage (or a bytes item) has been read to its end, the decoder goes.
    uint64_t end = 0;
    if (ranges) {
      for (const DcpCrcRange& r : *ranges) end = std::max(end, r.offset + r.length);
    }
    z->ReleaseAfter(end);
    src = std::move(z);
  }
  if (verify_ && ranges) src = std::make_unique<CrcCheckingSource>(std::move(src), crcs_, ranges, checked_);
  return src;
}

}  // namespace dcpp
