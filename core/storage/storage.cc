#include "core/storage/storage.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>

namespace dcpp {

void FileSource::ReadV(const std::vector<ReadRequest>& requests) {
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t{0});
  auto by_offset = [&](size_t a, size_t b) { return requests[a].offset < requests[b].offset; };
  if (!std::is_sorted(order.begin(), order.end(), by_offset)) std::stable_sort(order.begin(), order.end(), by_offset);
  // Spans up to a block reuse the thread's buffer; a larger one gets its own, freed at return,
  // so that a thread keeps at most kIoBlockBytes.
  thread_local std::vector<uint8_t> kept;
  std::vector<uint8_t> large;
  size_t i = 0;
  while (i < order.size()) {
    const ReadRequest& first = requests[order[i]];
    uint64_t end = first.offset + first.length;
    size_t j = i + 1;
    while (j < order.size() &&
           MergesReads(first.offset, end, requests[order[j]].offset, requests[order[j]].offset + requests[order[j]].length)) {
      end = requests[order[j]].offset + requests[order[j]].length;
      ++j;
    }
    if (j == i + 1) {
      if (first.length > 0) ReadAt(first.offset, first.data, first.length);
    } else {
      // Several requests and the small gaps between them: one read, then copies out.
      const size_t span = static_cast<size_t>(end - first.offset);
      std::vector<uint8_t>& scratch = span <= static_cast<size_t>(kIoBlockBytes) ? kept : large;
      if (scratch.size() < span) scratch.resize(span);
      ReadAt(first.offset, scratch.data(), span);
      for (size_t k = i; k < j; ++k) {
        const ReadRequest& r = requests[order[k]];
        if (r.length > 0) std::memcpy(r.data, scratch.data() + (r.offset - first.offset), r.length);
      }
    }
    i = j;
  }
}

bool StorageWriter::EncodesBytes() const { return dynamic_cast<const BytesEncoder*>(this) != nullptr; }

std::string EncodeBlob(const StorageWriter& writer, const std::string& blob) {
  const auto* encoder = As<const BytesEncoder>(writer);
  return encoder != nullptr ? encoder->EncodeBytes(blob) : blob;
}

void VerifyOwnChecksums(StorageReader& reader, bool on) {
  if (auto* c = As<OwnChecksums>(reader)) c->VerifyOwnChecksums(on);
}

bool KeepsChunkChecksums(const StorageWriter& writer) {
  return As<const NoChunkChecksums>(writer) == nullptr;
}

ItemFrame FrameOf(const StorageWriter& writer, const proto::PlanItem& item) {
  const auto* framer = As<const ItemFramer>(writer);
  return framer != nullptr ? framer->Frame(item) : ItemFrame{};
}

std::string LocalPathOf(const StorageReader& reader, const std::string& name) {
  const auto* local = As<const LocalFiles>(reader);
  return local != nullptr ? local->LocalPath(name) : "";
}

std::string FolderOf(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    std::string dir = path;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return dir;
  }
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace dcpp
