// The records of a zip archive being written, as torch.save writes them: local headers with
// torch.save's 64-byte alignment padding, data descriptors, the central directory and the end
// records (zip64 ones when a size or offset needs them).
#include "core/storage/dcp/zip_internal.h"

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/dcp/torch_archive.h"

namespace dcpp {
namespace torch_archive {

// Appends a local header for `name` whose data starts at a multiple of 64 (as torch.save).
void LocalHeader(std::string& out, uint64_t archive_pos, const std::string& name, bool zip64) {
  Put32(out, kLocalSig);
  Put16(out, zip64 ? 45 : 20);
  Put16(out, kFlags);
  Put16(out, 0);  // stored
  Put16(out, 0);  // time
  Put16(out, 0);  // date
  Put32(out, 0);  // crc: in the data descriptor
  Put32(out, zip64 ? kMax32 : 0);
  Put32(out, zip64 ? kMax32 : 0);
  Put16(out, static_cast<uint16_t>(name.size()));
  const uint64_t zip64_extra = zip64 ? 20 : 0;
  const uint64_t before = archive_pos + 30 + name.size() + zip64_extra;
  uint64_t pad = (kAlignment - (before + 4) % kAlignment) % kAlignment;
  Put16(out, static_cast<uint16_t>(zip64_extra + 4 + pad));
  out += name;
  if (zip64) {
    Put16(out, 0x0001);
    Put16(out, 16);
    Put64(out, 0);
    Put64(out, 0);
  }
  Put16(out, 0x4246);  // "FB": torch.save's padding field
  Put16(out, static_cast<uint16_t>(pad));
  out.append(pad, 'Z');
}

void Descriptor(std::string& out, uint32_t crc, uint64_t size, bool zip64) {
  Put32(out, kDescriptorSig);
  Put32(out, crc);
  if (zip64) {
    Put64(out, size);
    Put64(out, size);
  } else {
    Put32(out, static_cast<uint32_t>(size));
    Put32(out, static_cast<uint32_t>(size));
  }
}

// Appends a small entry (header, data, descriptor) at archive position out.size() + base.
void SmallEntry(std::string& out, uint64_t base, const std::string& name, const std::string& data,
                std::vector<ZipRecord>* records) {
  ZipRecord r{name, base + out.size(), data.size(), Crc32(data.data(), data.size())};
  LocalHeader(out, base + out.size(), name, false);
  out += data;
  Descriptor(out, r.crc, r.size, false);
  records->push_back(r);
}

// The central directory and end records for `records`, starting at archive position `base`.
std::string Directory(const std::vector<ZipRecord>& records, uint64_t base) {
  std::string out;
  bool any64 = false;
  for (const ZipRecord& r : records) {
    const bool big_size = r.size >= kMax32, big_offset = r.local_offset >= kMax32;
    std::string extra;
    if (big_size || big_offset) {
      std::string fields;
      if (big_size) {
        Put64(fields, r.size);
        Put64(fields, r.size);
      }
      if (big_offset) Put64(fields, r.local_offset);
      Put16(extra, 0x0001);
      Put16(extra, static_cast<uint16_t>(fields.size()));
      extra += fields;
      any64 = true;
    }
    Put32(out, kCentralSig);
    Put16(out, extra.empty() ? 20 : 45);  // made by
    Put16(out, extra.empty() ? 20 : 45);  // needed
    Put16(out, kFlags);
    Put16(out, 0);
    Put16(out, 0);
    Put16(out, 0);
    Put32(out, r.crc);
    Put32(out, big_size ? kMax32 : static_cast<uint32_t>(r.size));
    Put32(out, big_size ? kMax32 : static_cast<uint32_t>(r.size));
    Put16(out, static_cast<uint16_t>(r.name.size()));
    Put16(out, static_cast<uint16_t>(extra.size()));
    Put16(out, 0);  // comment
    Put16(out, 0);  // disk
    Put16(out, 0);  // internal attributes
    Put32(out, 0);  // external attributes
    Put32(out, big_offset ? kMax32 : static_cast<uint32_t>(r.local_offset));
    out += r.name;
    out += extra;
  }
  const uint64_t cd_size = out.size();
  const uint64_t end64 = base + out.size();
  if (any64 || base >= kMax32) {
    Put32(out, kEnd64Sig);
    Put64(out, 44);
    Put16(out, 45);
    Put16(out, 45);
    Put32(out, 0);
    Put32(out, 0);
    Put64(out, records.size());
    Put64(out, records.size());
    Put64(out, cd_size);
    Put64(out, base);
    Put32(out, kEnd64LocatorSig);
    Put32(out, 0);
    Put64(out, end64);
    Put32(out, 1);
  }
  Put32(out, kEndSig);
  Put16(out, 0);
  Put16(out, 0);
  Put16(out, static_cast<uint16_t>(records.size()));
  Put16(out, static_cast<uint16_t>(records.size()));
  Put32(out, cd_size >= kMax32 ? kMax32 : static_cast<uint32_t>(cd_size));
  Put32(out, base >= kMax32 ? kMax32 : static_cast<uint32_t>(base));
  Put16(out, 0);
  return out;
}

}  // namespace torch_archive
}  // namespace dcpp
