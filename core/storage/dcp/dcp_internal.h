// What dcp's .cc files share about DCP's .metadata pickle (not part of dcp.h's API): the
// modules its classes live in, the storage index it holds (where each chunk or blob lies),
// and readers of its size and dtype fields.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/storage/dcp/pickle.h"
#include "core/storage/storage.h"

namespace dcpp {

constexpr char kMd[] = "torch.distributed.checkpoint.metadata";
constexpr char kOldMd[] = "torch.distributed._shard.sharded_tensor.metadata";
constexpr char kFs[] = "torch.distributed.checkpoint.filesystem";
constexpr char kStrided[] = "#strided@";
// A compressed item's decompressed bytes: "<file>#zstd@<offset>+<length>" (the compressed
// range of the file), served by DcpReader::Open through a ZstdSource.
constexpr char kZstd[] = "#zstd@";

// A torch.Size (or a plain tuple or list) of ints; errors name `what`.
std::vector<int64_t> SizeOf(const pickle::ValuePtr& v, const std::string& what);

// The dtype name of a TensorProperties object (either module's, either state form); errors
// name `what`.
std::string DtypeOf(const pickle::Value& props, const std::string& what);

// Key of a chunk's storage entry: FQN and chunk offsets ("" offsets for blobs).
using IndexKey = std::pair<std::string, std::vector<int64_t>>;

struct StorageInfo {
  std::string file;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zstd = false;  // transform_descriptors ["stream.zstd/1"]: offset and length are compressed
  // The name under which the item's own bytes are read: the file, or its virtual
  // decompressed view (kZstd), where the item begins at byte 0.
  std::string View() const;
  uint64_t ViewOffset() const { return zstd ? 0 : offset; }
};

struct Parsed {
  pickle::ValuePtr root;
  std::map<IndexKey, StorageInfo> storage;
};

// Decodes DCP's .metadata pickle (only the globals its classes use are allowed), checks its
// version, and indexes its storage_data. Errors name `where` and the key.
Parsed Parse(const std::string& bytes, const std::string& where);

// DCP's serialization_format=SAFETENSORS: the tensors of a data file are one safetensors blob
// after its bytes items, and every tensor's _StorageInfo offset is where that blob begins
// (its length the tensor's byte count). The blob's __metadata__ "DCP_SHARDING_INFO" (JSON
// {fqn: {"saved_offsets": [..]}}) gives each tensor's chunk offsets. (dcp_safetensors.cc)
struct SafetensorsBlob {
  struct Entry {
    std::string dtype;  // dcpp's name
    std::vector<int64_t> shape;
    bool has_offsets = false;
    std::vector<int64_t> saved_offsets;
    uint64_t offset = 0;  // of the first data byte, absolute in the file
    uint64_t nbytes = 0;
  };
  std::map<std::string, Entry> entries;
};
// True if the bytes at `offset` of `src` begin as a safetensors blob does (an 8-byte length,
// then '{'), not as a torch.save archive.
bool IsSafetensorsBlob(FileSource& src, uint64_t offset);
// The blob at `offset` of `src`, its header checked (JSON, dtypes, offsets inside the file
// and matching each shape). Errors name `where`.
SafetensorsBlob ReadSafetensorsBlob(FileSource& src, uint64_t offset, const std::string& where);

}  // namespace dcpp
