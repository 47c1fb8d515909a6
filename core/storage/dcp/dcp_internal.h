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

namespace dcpp {

constexpr char kMd[] = "torch.distributed.checkpoint.metadata";
constexpr char kOldMd[] = "torch.distributed._shard.sharded_tensor.metadata";
constexpr char kFs[] = "torch.distributed.checkpoint.filesystem";
constexpr char kStrided[] = "#strided@";

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
};

struct Parsed {
  pickle::ValuePtr root;
  std::map<IndexKey, StorageInfo> storage;
};

// Decodes DCP's .metadata pickle (only the globals its classes use are allowed), checks its
// version, and indexes its storage_data. Errors name `where` and the key.
Parsed Parse(const std::string& bytes, const std::string& where);

}  // namespace dcpp
