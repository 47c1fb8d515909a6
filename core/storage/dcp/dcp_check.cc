// CheckDcpArchives and UnsafeDcpObjects: what verify checks in a DCP checkpoint's archives
// beyond the metadata (zip structure, every entry's CRC-32, the globals of bytes items).
#include "core/storage/dcp/dcp.h"

#include <algorithm>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/storage/dcp/dcp_internal.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/dcp/zstd_stream.h"
#include "core/storage/native/filesystem.h"

namespace dcpp {
namespace {

using pickle::Value;
using pickle::ValuePtr;

}  // namespace

DcpArchiveCheck CheckDcpArchives(const std::string& dir) {
  FileSystemReader files(dir);
  const Parsed p = Parse(files.ReadMetadata(), dir + "/.metadata");
  DcpArchiveCheck out;
  std::map<std::string, std::shared_ptr<FileSource>> open;
  std::vector<char> buf(8 << 20);
  for (const auto& [key, info] : p.storage) {
    std::string at;
    for (size_t d = 0; d < key.second.size(); ++d) at += (d ? ", " : "") + std::to_string(key.second[d]);
    const std::string what = StrCat("key '", key.first, "'", key.second.empty() ? "" : " chunk at [" + at + "]",
                                    " in ", dir, "/", info.file, info.zstd ? " (zstd-compressed item at byte " : " (item at byte ",
                                    info.offset, ")");
    out.items += 1;
    try {
      auto& file = open[info.file];
      if (!file) file = files.Open(info.file);
      DCPP_CHECK(info.offset <= file->Size() && info.length <= file->Size() - info.offset, what,
                 ": the file has only ", file->Size(), " bytes (truncated)");
      // A compressed item is checked as its decompressed bytes.
      std::shared_ptr<FileSource> src = file;
      uint64_t length = info.length;
      if (info.zstd) {
        src = std::make_shared<ZstdSource>(file, info.offset, info.length, what);
        length = src->Size();
      }
      if (IsSafetensorsBlob(*src, info.ViewOffset())) {
        // DCP's serialization_format=SAFETENSORS: no archive, only a header to check.
        const SafetensorsBlob blob = ReadSafetensorsBlob(*src, info.ViewOffset(), what);
        DCPP_CHECK(blob.entries.count(key.first), what, ": the safetensors blob holds no tensor named '",
                   key.first, "'");
        continue;
      }
      const std::vector<std::string> structure =
          torch_archive::CheckZipStructure(*src, info.ViewOffset(), length, what);
      out.problems.insert(out.problems.end(), structure.begin(), structure.end());
      if (!structure.empty()) continue;  // (its entries cannot be trusted to be where they say)
      for (const torch_archive::ZipEntry& e :
           torch_archive::ReadZipDirectory(*src, info.ViewOffset(), length, what)) {
        uint32_t crc = 0;
        for (uint64_t done = 0; done < e.size;) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), e.size - done));
          src->ReadAt(e.data_offset + done, buf.data(), n);
          crc = torch_archive::Crc32(buf.data(), n, crc);
          done += n;
        }
        out.entries += 1;
        out.bytes += static_cast<int64_t>(e.size);
        if (crc != e.crc32) {
          out.problems.push_back(StrCat(what, ": entry ", e.name, " fails its CRC-32 (recorded ",
                                        e.crc32, ", computed ", crc, "): the data is corrupt"));
        }
      }
    } catch (const std::exception& e) {
      out.problems.push_back(ErrorMessage(e));
    }
  }
  const std::vector<std::string> unsafe = UnsafeDcpObjects(dir);
  out.problems.insert(out.problems.end(), unsafe.begin(), unsafe.end());
  return out;
}

std::vector<std::string> UnsafeDcpObjects(const std::string& dir) {
  FileSystemReader files(dir);
  const Parsed p = Parse(files.ReadMetadata(), dir + "/.metadata");
  std::vector<std::string> out;
  const ValuePtr sdm = p.root->Attr("state_dict_metadata");
  if (!sdm || !sdm->Is(Value::Kind::kDict)) return out;
  for (const auto& [k, v] : sdm->dict) {
    if (!k->Is(Value::Kind::kStr) || !v->IsObjectOf(kMd, "BytesStorageMetadata")) continue;
    auto it = p.storage.find({k->str, {}});
    if (it == p.storage.end()) continue;  // (ReadDcpMetadata names that)
    const StorageInfo& info = it->second;
    const std::string what = StrCat("bytes key '", k->str, "' in ", dir, "/", info.file, " (item at byte ",
                                    info.offset, ")");
    try {
      std::unique_ptr<FileSource> src = files.Open(info.file);
      uint64_t length = info.length;
      if (info.zstd) {
        src = std::make_unique<ZstdSource>(std::shared_ptr<FileSource>(std::move(src)), info.offset, info.length, what);
        length = src->Size();
      }
      DCPP_CHECK(length <= (1u << 30), what, ": a bytes item of ", length,
                 " bytes is too large to search for unsafe globals");
      std::string data(length, '\0');
      src->ReadAt(info.ViewOffset(), data.data(), data.size());
      // A broken archive is CheckDcpArchives' to report; its pickle is searched when it opens.
      if (!torch_archive::IsTorchSaveArchive(data)) continue;
      const std::vector<std::string> globals = torch_archive::UnsafeGlobals(data, what);
      if (globals.empty()) continue;
      std::string names;
      for (const std::string& g : globals) names += (names.empty() ? "" : ", ") + g;
      out.push_back(StrCat(what, ": its pickle names ", names, ", outside the globals a state dict uses "
                           "(torch.load(weights_only=True) refuses ", globals.size() == 1 ? "it" : "them",
                           "); PyTorch's dcp.load would import and call ", globals.size() == 1 ? "it" : "them"));
    } catch (const std::exception& e) {
      out.push_back(StrCat(what, ": its pickle cannot be checked for unsafe globals (", ErrorMessage(e),
                           "); PyTorch's dcp.load would run whatever it holds"));
    }
  }
  return out;
}

}  // namespace dcpp
