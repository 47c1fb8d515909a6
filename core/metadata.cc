#include "core/metadata.h"

#include "core/box.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/storage/file_names.h"

namespace dcpp {
namespace {

void CheckFile(const std::string& file, const std::string& where, const std::string& key) {
  DCPP_CHECK(IsPlainFileName(file), "checkpoint ", where, ": key '", key, "' names data file '",
             file, "', which is not a plain file name inside the checkpoint folder");
}

}  // namespace

proto::Metadata ParseMetadata(const std::string& bytes, const std::string& where) {
  proto::Metadata md;
  DCPP_CHECK(md.ParseFromString(bytes), "checkpoint ", where,
             ": .metadata is corrupt or truncated (", bytes.size(), " bytes)");
  DCPP_CHECK(md.format_major() != 0, "checkpoint ", where, ": .metadata has no format version");
  DCPP_CHECK(md.format_major() <= kFormatMajor, "checkpoint ", where, " has format version ",
             md.format_major(), ".", md.format_minor(), "; this dcpp reads up to ", kFormatMajor,
             ".x");
  DCPP_CHECK(md.checksum_algorithm() == kChecksumAlgorithm || !HasChecksums(md), "checkpoint ", where,
             ": unknown checksum algorithm '", md.checksum_algorithm(), "'");
  for (const auto& t : md.tensors()) {
    const c10::ScalarType dtype = DtypeFromName(t.dtype());
    const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    for (int64_t s : shape) DCPP_CHECK(s >= 0, "checkpoint ", where, ": key '", t.fqn(), "' has a negative size");
    for (const auto& c : t.chunks()) {
      CheckFile(c.file(), where, t.fqn());
      const Box box{{c.offsets().begin(), c.offsets().end()}, {c.sizes().begin(), c.sizes().end()}};
      DCPP_CHECK(box.offsets.size() == shape.size() && box.sizes.size() == shape.size() &&
                     Contains(WholeBox(shape), box),
                 "checkpoint ", where, ": key '", t.fqn(), "' has chunk ", box.ToString(),
                 " outside its shape");
      DCPP_CHECK(c.length() == static_cast<uint64_t>(box.numel() * ElementSize(dtype)),
                 "checkpoint ", where, ": key '", t.fqn(), "' chunk ", box.ToString(),
                 " has length ", c.length(), ", expected ", box.numel() * ElementSize(dtype));
    }
  }
  for (const auto& b : md.bytes()) CheckFile(b.file(), where, b.fqn());
  return md;
}

std::string SerializeMetadata(const proto::Metadata& md) {
  std::string out;
  DCPP_CHECK(md.SerializeToString(&out), "cannot serialize checkpoint metadata");
  return out;
}

Box ChunkBox(const proto::ChunkMeta& c) {
  return Box{{c.offsets().begin(), c.offsets().end()}, {c.sizes().begin(), c.sizes().end()}};
}

}  // namespace dcpp
