#include "core/format/metadata.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "core/base/checked_math.h"
#include "core/base/error.h"
#include "core/format/checksum.h"
#include "core/format/file_names.h"
#include "core/model/box.h"
#include "core/model/dtype.h"

namespace dcpp {
namespace {

// The metadata_checksum field as the last 9 bytes of the file: its tag (field 15, wire type
// fixed64), then the value little-endian.
constexpr unsigned char kChecksumTag = (15 << 3) | 1;
constexpr size_t kTrailerSize = 9;

void CheckFile(const std::string& file, const std::string& where, const std::string& key) {
  DCPP_CHECK(IsPlainFileName(file), "checkpoint ", where, ": key '", key, "' names data file '",
             file, "', which is not a plain file name inside the checkpoint folder");
  DCPP_CHECK(!IsReservedFileName(file), "checkpoint ", where, ": key '", key, "' names data file '", file,
             "', a name reserved for the checkpoint's own files (.metadata, .metadata.tmp, .dcpp.lock), "
             "never data");
}

// [offset, offset + length) must be a range of bytes a file can have.
void CheckFileRange(uint64_t offset, uint64_t length, const std::string& where, const std::string& what,
                    const std::string& file) {
  DCPP_CHECK(CheckedFileEnd(offset, length), "checkpoint ", where, ": ", what, " in ", file,
             " has offset ", offset, " and length ", length, ", beyond the largest file size (2^63)");
}

// Format 1.1 files end with their own checksum; 1.0 files have none.
void CheckTrailer(const std::string& bytes, const proto::Metadata& md, const std::string& where) {
  const bool v11 = md.format_major() > 1 || md.format_minor() >= 1;
  if (!v11 && !md.has_metadata_checksum()) return;
  DCPP_CHECK(bytes.size() >= kTrailerSize &&
                 static_cast<unsigned char>(bytes[bytes.size() - kTrailerSize]) == kChecksumTag,
             "checkpoint ", where, ": .metadata (format ", md.format_major(), ".", md.format_minor(),
             ") does not end with its checksum: the file is corrupt or truncated");
  uint64_t stored = 0;
  for (size_t i = 0; i < 8; ++i) {
    stored |= uint64_t{static_cast<unsigned char>(bytes[bytes.size() - 8 + i])} << (8 * i);
  }
  const uint64_t actual = Checksum::Of(bytes.data(), bytes.size() - kTrailerSize);
  DCPP_CHECK(stored == actual, "checkpoint ", where, ": .metadata is corrupt: its checksum ",
             "does not match its contents (XXH3-64 of its first ", bytes.size() - kTrailerSize,
             " bytes)");
}

// Checks one tensor's entry; adds its bytes to `total`. Every box it accepts lies inside a
// shape whose byte size fits in int64, so later arithmetic on it cannot overflow.
void CheckTensor(const proto::TensorMeta& t, const std::string& where, Conflicts conflicts,
                 int64_t& total) {
  // The key's name in errors, built only when one is raised (this runs once per tensor).
  const auto key = [&] { return StrCat("checkpoint ", where, ": key '", t.fqn(), "'"); };
  int64_t es = 0;
  try {
    es = ElementSize(DtypeFromName(t.dtype()));
  } catch (const std::exception& e) {
    throw Error(StrCat(key(), ": ", ErrorMessage(e)));
  }
  const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
  for (int64_t s : shape) DCPP_CHECK(s >= 0, key(), " has a negative size in shape ", Box{{}, shape}.ToString());
  const auto numel = CheckedNumel(shape);
  DCPP_CHECK(numel && CheckedMul(*numel, es), key(), " has shape ", WholeBox(shape).ToString(),
             " of ", t.dtype(), ", more than 2^63 bytes");
  const Box whole = WholeBox(shape);
  std::vector<Box> boxes;
  for (int i = 0; i < t.chunks_size(); ++i) {
    const auto& c = t.chunks(i);
    Box box = ChunkBox(c);
    DCPP_CHECK(box.offsets.size() == shape.size() && box.sizes.size() == shape.size(), key(), " chunk ", i,
               " ", box.ToString(), " has ", box.offsets.size(), " offsets and ", box.sizes.size(),
               " sizes for a tensor of ", shape.size(), " dimensions");
    CheckFile(c.file(), where, t.fqn());
    DCPP_CHECK(Contains(whole, box), key(), " has chunk ", box.ToString(), " outside its shape ",
               whole.ToString());
    const int64_t length = box.numel() * es;  // no overflow: inside `whole`
    DCPP_CHECK(c.length() == static_cast<uint64_t>(length), key(), " chunk ", box.ToString(),
               " has length ", c.length(), ", expected ", length);
    if (!CheckedFileEnd(c.offset(), c.length())) {
      CheckFileRange(c.offset(), c.length(), where, StrCat("key '", t.fqn(), "' chunk ", box.ToString()), c.file());
    }
    const auto sum = CheckedAdd(total, length);
    DCPP_CHECK(sum, "checkpoint ", where, ": the chunks and blobs add up to more than 2^63 bytes (at key '",
               t.fqn(), "')");
    total = *sum;
    boxes.push_back(std::move(box));
  }
  if (conflicts == Conflicts::kAllow) return;
  if (const auto pair = FirstOverlap(boxes, shape.size())) {
    const auto& a = t.chunks(static_cast<int>(pair->first));
    const auto& b = t.chunks(static_cast<int>(pair->second));
    const Box& ba = boxes[pair->first];
    const Box& bb = boxes[pair->second];
    DCPP_CHECK(ba != bb, key(), " lists chunk ", ba.ToString(), " twice (in ", a.file(), " and in ",
               b.file(), "): every element must be stored once");
    DCPP_CHECK(false, key(), " has overlapping chunks ", ba.ToString(), " in ", a.file(), " and ",
               bb.ToString(), " in ", b.file(), ": every element must be stored once");
  }
}

}  // namespace

// A sweep along the dimension with the most distinct chunk starts (so row- and column-sharded
// tensors are both near-linear); 0-d chunks all hold the one element.
std::optional<std::pair<size_t, size_t>> FirstOverlap(const std::vector<Box>& boxes, size_t nd) {
  if (boxes.size() < 2) return std::nullopt;
  size_t dim = 0, best = 0;
  for (size_t d = 0; d < nd; ++d) {
    std::set<int64_t> starts;
    for (const Box& b : boxes) starts.insert(b.offsets[d]);
    if (starts.size() > best) best = starts.size(), dim = d;
  }
  auto start = [&](size_t i) { return nd == 0 ? 0 : boxes[i].offsets[dim]; };
  auto end = [&](size_t i) { return nd == 0 ? 1 : boxes[i].offsets[dim] + boxes[i].sizes[dim]; };
  std::vector<size_t> order(boxes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return start(i) < start(j); });
  for (size_t x = 0; x < order.size(); ++x) {
    const size_t i = order[x];
    if (boxes[i].empty()) continue;
    for (size_t y = x + 1; y < order.size() && start(order[y]) < end(i); ++y) {
      const size_t j = order[y];
      if (!boxes[j].empty() && Intersect(boxes[i], boxes[j])) {
        return std::make_pair(std::min(i, j), std::max(i, j));
      }
    }
  }
  return std::nullopt;
}

proto::Metadata ParseMetadata(const std::string& bytes, const std::string& where, Conflicts conflicts) {
  proto::Metadata md;
  DCPP_CHECK(md.ParseFromString(bytes), "checkpoint ", where,
             ": .metadata is corrupt or truncated (", bytes.size(), " bytes)");
  DCPP_CHECK(md.format_major() != 0, "checkpoint ", where, ": .metadata has no format version");
  DCPP_CHECK(md.format_major() <= kFormatMajor, "checkpoint ", where, " has format version ",
             md.format_major(), ".", md.format_minor(), "; this dcpp reads up to ", kFormatMajor,
             ".x");
  CheckTrailer(bytes, md, where);
  md.clear_metadata_checksum();
  DCPP_CHECK(md.checksum_algorithm() == kChecksumAlgorithm || !HasChecksums(md), "checkpoint ", where,
             ": unknown checksum algorithm '", md.checksum_algorithm(), "'");
  int64_t total = 0;
  std::map<std::string, int> seen;
  for (const auto& t : md.tensors()) {
    seen[t.fqn()] += 1;
    CheckTensor(t, where, conflicts, total);
  }
  for (const auto& b : md.bytes()) {
    seen[b.fqn()] += 1;
    CheckFile(b.file(), where, b.fqn());
    CheckFileRange(b.offset(), b.length(), where, StrCat("bytes '", b.fqn(), "'"), b.file());
    const auto sum = CheckedAdd(total, static_cast<int64_t>(b.length()));  // length < 2^63: checked above
    DCPP_CHECK(sum, "checkpoint ", where, ": the chunks and blobs add up to more than 2^63 bytes (at key '",
               b.fqn(), "')");
    total = *sum;
  }
  if (conflicts == Conflicts::kRefuse) {
    for (const auto& [key, n] : seen) {
      DCPP_CHECK(n == 1, "checkpoint ", where, ": key '", key, "' is listed ", n, " times in the metadata");
    }
  }
  return md;
}

std::string SerializeMetadata(const proto::Metadata& md) {
  std::string out;
  if (md.has_metadata_checksum()) {
    proto::Metadata copy = md;
    copy.clear_metadata_checksum();
    DCPP_CHECK(copy.SerializeToString(&out), "cannot serialize checkpoint metadata");
  } else {
    DCPP_CHECK(md.SerializeToString(&out), "cannot serialize checkpoint metadata");
  }
  const uint64_t sum = Checksum::Of(out.data(), out.size());
  out.push_back(static_cast<char>(kChecksumTag));
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((sum >> (8 * i)) & 0xff));
  return out;
}

Box ChunkBox(const proto::ChunkMeta& c) {
  return Box{{c.offsets().begin(), c.offsets().end()}, {c.sizes().begin(), c.sizes().end()}};
}

}  // namespace dcpp
