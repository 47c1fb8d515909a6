// SafetensorsReader: Hugging Face safetensors checkpoints read as dcpp checkpoints.
//
// A checkpoint is one `.safetensors` file, or a folder holding `model.safetensors.index.json`
// and the shard files its weight_map names, or a folder of `*.safetensors` files (no index).
// Each file is an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}}
// and the data area, where a tensor's row-major little-endian bytes are [8 + N + b, 8 + N + e).
//
// ReadMetadata() validates every header (length, JSON, dtype, shape, offsets inside the data
// area and matching numel * element size, no overlaps, the index's weight_map against the
// files) and returns native metadata bytes (core/format/metadata.h) in which each tensor is one chunk
// covering it, in the file and at the byte offset where it lies. Files that PyTorch's
// HuggingFaceStorageWriter wrote with save_distributed (one per rank, "shard-0000R-model-...")
// hold shards: their `__metadata__` "DCP_SHARDING_INFO" (JSON {name: {"saved_offsets": [..]}})
// places each as a chunk at those offsets, a tensor may then be in several files (one chunk
// each, none at the same offsets, one dtype), and its shape is what its chunks span; world size 1, creator
// "safetensors", checksum algorithm kNoChecksum (safetensors records none). `__metadata__`
// pairs go into planner_data as "safetensors.<key>". Errors are dcpp::Error naming the file
// and the tensor.
//
// Thread-safety: as every StorageReader (core/storage/storage.h). No LibTorch headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/native/filesystem.h"
#include "core/storage/storage.h"

namespace dcpp {

// The index file of a sharded safetensors checkpoint, as Hugging Face names it.
constexpr char kSafetensorsIndex[] = "model.safetensors.index.json";

class SafetensorsReader final : public StorageReader {
 public:
  // `path`: a safetensors file, or a folder as described above. Throws dcpp::Error naming
  // `path` if it is neither.
  explicit SafetensorsReader(const std::string& path);
  std::string ReadMetadata() override;
  std::unique_ptr<FileSource> Open(const std::string& name) override;
  // The folder holding the files (data file names in the metadata are relative to it).
  std::string Describe() const override { return dir_; }

  // The safetensors files of the checkpoint (plain names in Describe()), sorted.
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::string dir_;
  std::string index_;  // the index file name, or "" when there is none
  std::vector<std::string> files_;
  FileSystemReader folder_;
};

// True for a `.safetensors` file, or a folder without `.metadata` that holds an index
// (`*.safetensors.index.json`) or `*.safetensors` files.
bool IsSafetensors(const std::string& path);

// safetensors dtype names ("F32", "BF16", "F8_E4M3", ...) <-> dcpp's ("float32", ...);
// "" when there is no counterpart.
std::string DtypeFromSafetensors(const std::string& st_dtype);
std::string DtypeToSafetensors(const std::string& dcpp_dtype);
// The safetensors header's shape of a dcpp tensor of `dcpp_dtype` and `shape`: the same,
// except for float4_e2m1fn_x2 (F4), whose last dimension counts 4-bit values (twice dcpp's
// bytes); a 0-d one is refused naming `key`.
std::vector<int64_t> SafetensorsShape(const std::string& dcpp_dtype, std::vector<int64_t> shape,
                                      const std::string& key);

}  // namespace dcpp
