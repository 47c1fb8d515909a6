#include "core/storage/storage.h"

namespace dcpp {

bool StorageWriter::EncodesBytes() const { return dynamic_cast<const BytesEncoder*>(this) != nullptr; }

std::string EncodeBlob(const StorageWriter& writer, const std::string& blob) {
  const auto* encoder = As<const BytesEncoder>(writer);
  return encoder != nullptr ? encoder->EncodeBytes(blob) : blob;
}

void VerifyOwnChecksums(StorageReader& reader, bool on) {
  if (auto* c = As<OwnChecksums>(reader)) c->VerifyOwnChecksums(on);
}

ItemFrame FrameOf(const StorageWriter& writer, const proto::PlanItem& item) {
  const auto* framer = As<const ItemFramer>(writer);
  return framer != nullptr ? framer->Frame(item) : ItemFrame{};
}

std::string LocalPathOf(const StorageReader& reader, const std::string& name) {
  const auto* local = As<const LocalFiles>(reader);
  return local != nullptr ? local->LocalPath(name) : "";
}

}  // namespace dcpp
