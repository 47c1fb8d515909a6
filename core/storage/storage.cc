#include "core/storage/storage.h"

#include <filesystem>

namespace dcpp {

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
