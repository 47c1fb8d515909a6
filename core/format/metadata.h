// Reading and writing the native metadata (core/format/metadata.proto) with its checks:
// format version, the metadata's own checksum (format 1.1), file names confined to the
// checkpoint folder, chunk geometry consistent with the tensor's shape and dtype, sizes and
// file ranges that fit in 64 bits, every key listed once and no two chunks of a tensor
// overlapping. The bytes are untrusted: any input gives a message or a dcpp::Error, never a
// crash. Thread-safe (pure functions).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/format/metadata.pb.h"
#include "core/model/box.h"

namespace dcpp {

constexpr uint32_t kFormatMajor = 1;
// 1.1 adds the metadata checksum; 1.0 files (without it) are still read.
constexpr uint32_t kFormatMinor = 1;
constexpr char kChecksumAlgorithm[] = "xxh3_64";
// Formats that record no checksums of their own (PyTorch DCP, safetensors) say this; readers
// then skip checksum verification.
constexpr char kNoChecksum[] = "none";
// Where a writer starts each chunk and blob with bytes (a habit for fast I/O, not a rule:
// readers never require it): at a multiple of kChunkAlignment, except items smaller than that
// in a format without item framing, which are packed at multiples of kSmallChunkAlignment
// (10,000 tensors of 12 bytes would otherwise take a page each).
constexpr uint64_t kChunkAlignment = 4096;
constexpr uint64_t kSmallChunkAlignment = 64;

// What ParseMetadata does with a key listed twice and with chunks of one tensor that overlap
// (including two chunks of the same box). Loading needs kRefuse (it would silently keep one of
// them); Verify uses kAllow and reports each one.
enum class Conflicts { kRefuse, kAllow };

// Parses and validates `bytes` read from `where` (a folder, for messages). Throws dcpp::Error
// naming `where` and the offending key or file. The returned message has no
// metadata_checksum (it was checked and cleared).
proto::Metadata ParseMetadata(const std::string& bytes, const std::string& where,
                              Conflicts conflicts = Conflicts::kRefuse);

// The bytes of a .metadata file: `md` (its metadata_checksum ignored) followed by the
// metadata_checksum field holding the XXH3-64 of everything before it (docs/format.md).
std::string SerializeMetadata(const proto::Metadata& md);

// True when the chunks and blobs of `md` carry checksums that readers can verify.
inline bool HasChecksums(const proto::Metadata& md) { return md.checksum_algorithm() != kNoChecksum; }

// The box of the global tensor that a saved chunk holds.
Box ChunkBox(const proto::ChunkMeta& chunk);

// The first two of `boxes` (boxes of one tensor of `nd` dimensions) that overlap, as indices
// (smaller first), or nullopt; two equal boxes overlap, boxes without elements overlap nothing.
// The rule ParseMetadata applies to a tensor's chunks, and save to the chunks its ranks write.
std::optional<std::pair<size_t, size_t>> FirstOverlap(const std::vector<Box>& boxes, size_t nd);

}  // namespace dcpp
