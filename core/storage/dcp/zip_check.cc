// CheckZipStructure: everything about an archive's zip structure that PyTorch's reader (miniz,
// in torch.load) relies on and the CRC-32s do not cover.
#include "core/storage/dcp/torch_archive.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/storage/dcp/zip_internal.h"

namespace dcpp {
namespace torch_archive {
namespace {

const uint8_t* Bytes(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// CheckZipStructure's work; appends to `problems`, throws for what stops the check.
void CheckStructure(FileSource& src, uint64_t offset, uint64_t length, const std::string& where,
                    std::vector<std::string>& problems) {
  auto problem = [&](const std::string& text) { problems.push_back(StrCat(where, ": ", text)); };
  DCPP_CHECK(length >= 22, where, ": item of ", length, " bytes is too short to be a zip archive");
  const std::string first = ReadRange(src, offset, length, 0, 4, where, "first local header");
  if (Get32(Bytes(first)) != kLocalSig) {
    problem("the archive does not begin with a zip local header (torch.load checks for one)");
  }
  // The end record: torch.save writes no archive comment, so it is the last 22 bytes.
  const std::string eocd = ReadRange(src, offset, length, length - 22, 22, where, "end record");
  const uint8_t* e = Bytes(eocd);
  DCPP_CHECK(Get32(e) == kEndSig, where, ": the zip end record is not in the last 22 bytes (found ",
             Hex32(Get32(e)), " where its signature belongs): the archive is corrupt");
  const uint16_t disk = Get16(e + 4), cd_disk = Get16(e + 6), on_disk = Get16(e + 8),
                 total = Get16(e + 10), comment = Get16(e + 20);
  uint64_t count = total, cd_size = Get32(e + 12), cd_offset = Get32(e + 16);
  if (disk != 0 || cd_disk != 0) {
    problem(StrCat("the zip end record names disk ", disk, " and directory disk ", cd_disk,
                   "; a torch.save archive is one disk (0)"));
  }
  if (on_disk != total) {
    problem(StrCat("the zip end record counts ", on_disk, " entries on this disk but ", total, " in all"));
  }
  if (comment != 0) {
    problem(StrCat("the zip end record announces a comment of ", comment, " bytes, but nothing follows it"));
  }
  uint64_t records = length - 22;  // where the central directory must end
  const bool deferred = total == 0xffff || cd_size == kMax32 || cd_offset == kMax32;
  std::string loc;
  if (length >= 42) loc = ReadRange(src, offset, length, length - 42, 20, where, "zip64 locator");
  if (!loc.empty() && Get32(Bytes(loc)) == kEnd64LocatorSig) {
    const uint8_t* l = Bytes(loc);
    const uint32_t loc_disk = Get32(l + 4), disks = Get32(l + 16);
    const uint64_t rec = Get64(l + 8);
    if (loc_disk != 0 || disks != 1) {
      problem(StrCat("the zip64 locator names disk ", loc_disk, " of ", disks, " disks; a torch.save archive is one disk"));
    }
    DCPP_CHECK(rec <= length - 42 && length - 42 - rec >= 56, where, ": the zip64 locator points at byte ",
               rec, ", where no zip64 end record fits (the locator is at byte ", length - 42, ")");
    const std::string z64 = ReadRange(src, offset, length, rec, 56, where, "zip64 end record");
    const uint8_t* z = Bytes(z64);
    DCPP_CHECK(Get32(z) == kEnd64Sig, where, ": the zip64 locator points at byte ", rec,
               ", which holds no zip64 end record");
    const uint64_t size = Get64(z + 4);
    if (rec + 12 + size != length - 42) {
      problem(StrCat("the zip64 end record at byte ", rec, " says it has ", size,
                     " bytes, but the locator follows at byte ", length - 42));
    }
    if (Get32(z + 16) != 0 || Get32(z + 20) != 0) problem("the zip64 end record names a disk other than 0");
    const uint64_t on_disk64 = Get64(z + 24), total64 = Get64(z + 32);
    if (on_disk64 != total64) {
      problem(StrCat("the zip64 end record counts ", on_disk64, " entries on this disk but ", total64, " in all"));
    }
    if (total != 0xffff && total != total64) {
      problem(StrCat("the zip end record counts ", total, " entries, the zip64 end record ", total64));
    }
    if (Get32(e + 12) != kMax32 && Get32(e + 12) != Get64(z + 40)) {
      problem(StrCat("the zip end record gives the directory ", Get32(e + 12), " bytes, the zip64 end record ",
                     Get64(z + 40)));
    }
    if (Get32(e + 16) != kMax32 && Get32(e + 16) != Get64(z + 48)) {
      problem(StrCat("the zip end record puts the directory at byte ", Get32(e + 16),
                     ", the zip64 end record at byte ", Get64(z + 48)));
    }
    count = total64;
    cd_size = Get64(z + 40);
    cd_offset = Get64(z + 48);
    records = rec;
  } else if (deferred) {
    problem("the zip end record defers to a zip64 end record, but there is no zip64 locator before it");
  }
  DCPP_CHECK(cd_offset <= records && cd_size == records - cd_offset, where, ": the central directory (",
             cd_size, " bytes at byte ", cd_offset, ") does not end where the end records begin (byte ",
             records, ")");
  DCPP_CHECK(count > 0 && count <= cd_size / 46, where, ": the end record counts ", count,
             " entries, which a central directory of ", cd_size, " bytes cannot hold");
  DCPP_CHECK(cd_size < (64u << 20), where, ": implausible zip central directory of ", cd_size, " bytes");
  const std::string cd = ReadRange(src, offset, length, cd_offset, cd_size, where, "central directory");
  const uint8_t* c = Bytes(cd);
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [local header, end of data) per entry
  std::vector<std::string> names;
  uint64_t pos = 0;
  for (uint64_t n = 0; n < count; ++n) {
    DCPP_CHECK(pos + 46 <= cd_size && Get32(c + pos) == kCentralSig, where,
               ": corrupt zip central directory (entry ", n, " of ", count, ")");
    const uint8_t* h = c + pos;
    const uint16_t flags = Get16(h + 8), method = Get16(h + 10), name_len = Get16(h + 28),
                   extra_len = Get16(h + 30), comment_len = Get16(h + 32), disk_start = Get16(h + 34);
    const uint32_t crc = Get32(h + 16);
    uint64_t csize = Get32(h + 20), usize = Get32(h + 24), local = Get32(h + 42);
    DCPP_CHECK(pos + 46 + name_len + extra_len + comment_len <= cd_size, where,
               ": corrupt zip central directory (entry ", n, " runs past its end)");
    const std::string name(reinterpret_cast<const char*>(h + 46), name_len);
    const std::string what = StrCat("entry ", name.empty() ? StrCat("#", n) : name);
    const uint8_t* x = h + 46 + name_len;
    for (uint64_t xp = 0; xp + 4 <= extra_len;) {
      const uint16_t id = Get16(x + xp), len = Get16(x + xp + 2);
      DCPP_CHECK(xp + 4 + len <= extra_len, where, ": corrupt zip extra field of ", what);
      if (id == 0x0001) {
        uint64_t q = xp + 4;
        for (uint64_t* field : {&usize, &csize, &local}) {
          if (*field != kMax32) continue;
          DCPP_CHECK(q + 8 <= xp + 4 + len, where, ": corrupt zip64 field of ", what);
          *field = Get64(x + q);
          q += 8;
        }
      }
      xp += 4 + len;
    }
    if (flags & 0x0001) problem(what + " is encrypted");
    if (method != 0 || csize != usize) problem(what + " is compressed; torch.save stores entries uncompressed");
    if (disk_start != 0) problem(StrCat(what, " starts on disk ", disk_start, "; a torch.save archive is one disk"));
    DCPP_CHECK(local <= cd_offset && cd_offset - local >= 30, where, ": the local header of ", what,
               " (byte ", local, ") is not before the central directory");
    const std::string lh = ReadRange(src, offset, length, local, 30, where, "local header");
    const uint8_t* l = Bytes(lh);
    DCPP_CHECK(Get32(l) == kLocalSig, where, ": no zip local header where the directory puts ", what,
               " (byte ", local, ")");
    const uint16_t l_flags = Get16(l + 6), l_method = Get16(l + 8), l_name_len = Get16(l + 26),
                   l_extra_len = Get16(l + 28);
    const std::string l_name = ReadRange(src, offset, length, local + 30, l_name_len, where, "local name");
    if (l_name != name) problem(StrCat(what, ": its local header names it '", l_name, "'"));
    if (l_method != method) problem(StrCat(what, ": its local header says method ", l_method, ", the directory ", method));
    if (!(l_flags & 0x0008)) {
      const uint32_t l_crc = Get32(l + 14), l_csize = Get32(l + 18), l_usize = Get32(l + 22);
      if (l_crc != crc) problem(StrCat(what, ": its local header records CRC-32 ", Hex32(l_crc), ", the directory ", Hex32(crc)));
      if ((l_usize != kMax32 && l_usize != usize) || (l_csize != kMax32 && l_csize != csize)) {
        problem(StrCat(what, ": its local header records ", l_usize, " bytes, the directory ", usize));
      }
    }
    const uint64_t data = local + 30 + l_name_len + l_extra_len;
    DCPP_CHECK(data <= cd_offset && usize <= cd_offset - data, where, ": ", what, " (", usize,
               " bytes at byte ", data, ") runs into the central directory (byte ", cd_offset, ")");
    uint64_t end = data + usize;
    if (l_flags & 0x0008) {  // a data descriptor follows: [signature] crc, sizes
      const uint64_t room = cd_offset - end;
      const std::string d = ReadRange(src, offset, length, end, std::min<uint64_t>(room, 8), where, "data descriptor");
      const bool sig = d.size() >= 4 && Get32(Bytes(d)) == kDescriptorSig;
      const size_t at = sig ? 4 : 0;
      if (d.size() < at + 4) {
        problem(what + ": its data descriptor is missing");
      } else if (Get32(Bytes(d) + at) != crc) {
        problem(StrCat(what, ": its data descriptor records CRC-32 ", Hex32(Get32(Bytes(d) + at)),
                       ", the directory ", Hex32(crc)));
      }
      end += std::min<uint64_t>(room, at + 4 + (usize >= kMax32 || csize >= kMax32 ? 16 : 8));
    }
    spans.emplace_back(local, end);
    names.push_back(name);
    pos += 46 + name_len + extra_len + comment_len;
  }
  if (pos != cd_size) {
    problem(StrCat("the central directory has ", cd_size - pos, " bytes after its ", count, " entries"));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) {
      problem(StrCat("two entries overlap (at bytes ", spans[i - 1].first, " and ", spans[i].first, ")"));
      break;
    }
  }
  // torch.load's own rules: every record under the first entry's top folder, a data.pkl and
  // a version record.
  const size_t slash = names[0].find('/');
  if (slash == std::string::npos) {
    problem(StrCat("the first entry '", names[0], "' is not in a folder (torch.load requires one)"));
    return;
  }
  const std::string prefix = names[0].substr(0, slash + 1);
  bool pkl = false, version = false;
  for (const std::string& name : names) {
    if (name.compare(0, prefix.size(), prefix) != 0) {
      problem(StrCat("entry ", name, " is outside the archive's folder ", prefix));
    }
    pkl |= name == prefix + "data.pkl";
    version |= name == prefix + "version" || name == prefix + ".data/version";
  }
  if (!pkl) problem(StrCat("the archive has no ", prefix, "data.pkl"));
  if (!version) problem(StrCat("the archive has no ", prefix, "version record (torch.load requires one)"));
}

}  // namespace

std::vector<std::string> CheckZipStructure(FileSource& src, uint64_t offset, uint64_t length,
                                           const std::string& where) {
  std::vector<std::string> problems;
  try {
    CheckStructure(src, offset, length, where, problems);
  } catch (const std::exception& e) {
    problems.push_back(ErrorMessage(e));
  }
  return problems;
}

}  // namespace torch_archive
}  // namespace dcpp
