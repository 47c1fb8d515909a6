// Reading and writing the native metadata (core/proto/metadata.proto) with its checks:
// format version, file names confined to the checkpoint folder, chunk geometry consistent
// with the tensor's shape and dtype. Thread-safe (pure functions).
#pragma once

#include <string>

#include "core/box.h"
#include "core/proto/metadata.pb.h"

namespace dcpp {

constexpr uint32_t kFormatMajor = 1;
constexpr uint32_t kFormatMinor = 0;
constexpr char kChecksumAlgorithm[] = "xxh3_64";
// Formats that record no checksums of their own (PyTorch DCP, safetensors) say this; readers
// then skip checksum verification.
constexpr char kNoChecksum[] = "none";
constexpr uint64_t kChunkAlignment = 4096;

// Parses and validates `bytes` read from `where` (a folder, for messages). Throws dcpp::Error
// naming `where` and the offending key or file.
proto::Metadata ParseMetadata(const std::string& bytes, const std::string& where);

std::string SerializeMetadata(const proto::Metadata& md);

// True when the chunks and blobs of `md` carry checksums that readers can verify.
inline bool HasChecksums(const proto::Metadata& md) { return md.checksum_algorithm() != kNoChecksum; }

// The box of the global tensor that a saved chunk holds.
Box ChunkBox(const proto::ChunkMeta& chunk);

}  // namespace dcpp
