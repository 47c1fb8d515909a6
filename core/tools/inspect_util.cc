// Implementation of inspect_util.h.
#include "core/tools/inspect_util.h"

#include <cstdint>
#include <map>
#include <string>

#include "core/format/metadata.pb.h"
#include "core/model/box.h"

namespace dcpp {

int64_t NumelOf(const proto::TensorMeta& t) {
  return WholeBox({t.shape().begin(), t.shape().end()}).numel();
}

std::map<std::string, FileUse> FilesOf(const proto::Metadata& md) {
  std::map<std::string, FileUse> files;
  auto add = [&](const std::string& file, uint64_t length) {
    files[file].bytes += static_cast<int64_t>(length);
    files[file].entries += 1;
  };
  for (const auto& t : md.tensors()) {
    for (const auto& c : t.chunks()) add(c.file(), c.length());
  }
  for (const auto& b : md.bytes()) add(b.file(), b.length());
  return files;
}

}  // namespace dcpp
