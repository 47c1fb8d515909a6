// CheckTorchSaveCrcs: every storage of every file of a torch.save checkpoint re-read and its
// CRC-32 compared with the one the zip directory records.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "core/base/error.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/torchsave/torchsave.h"

namespace dcpp {

TorchSaveCrcCheck CheckTorchSaveCrcs(const std::string& path) {
  TorchSaveReader reader(path);
  TorchSaveCrcCheck out;
  std::string block(static_cast<size_t>(kIoBlockBytes), '\0');
  for (const std::string& file : reader.files()) {
    const std::string where = reader.Describe() + "/" + file;
    std::unique_ptr<FileSource> src = reader.Open(file);
    std::vector<torch_archive::ZipEntry> entries;
    try {
      entries = torch_archive::ReadZipDirectory(*src, 0, src->Size(), where);
    } catch (const Error& e) {
      out.problems.push_back(e.what());
      continue;
    }
    ++out.files;
    for (const torch_archive::ZipEntry& e : entries) {
      uint32_t crc = 0;
      for (uint64_t done = 0; done < e.size;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(block.size(), e.size - done));
        src->ReadAt(e.data_offset + done, block.data(), n);
        crc = torch_archive::Crc32(block.data(), n, crc);
        done += n;
      }
      out.bytes += static_cast<int64_t>(e.size);
      ++out.entries;
      if (crc != e.crc32) {
        char got[11], want[11];
        std::snprintf(got, sizeof got, "0x%08x", crc);
        std::snprintf(want, sizeof want, "0x%08x", e.crc32);
        out.problems.push_back(StrCat(where, ": entry ", e.name, " fails its CRC-32 (recorded ", want,
                                      ", computed ", got, "): the file is corrupt"));
      }
    }
  }
  return out;
}

}  // namespace dcpp
