// ChunkWriter: how save() writes one tensor chunk into a data file, on one thread. Contiguous
// CPU memory is hashed and written block by block (chunk_io.h); CUDA and strided chunks go
// through the staging ring, whose copy of block k+1 runs while block k is hashed and written.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

#include "core/engine/save_load.h"
#include "core/engine/staging.h"
#include "core/storage/storage.h"

namespace dcpp::internal {

class ChunkWriter {
 public:
  // `hash`: compute each chunk's XXH3-64 (off for a writer whose format keeps none,
  // storage.h NoChunkChecksums).
  ChunkWriter(const SaveOptions& opt, bool hash) : ring_(opt.staging_bytes, opt.staging_buffers), hash_(hash) {}

  // Writes `t` (sizes = box) row-major at `offset`; `done` receives its XXH3-64 (0 without
  // `hash`) once the last byte is written: at once for contiguous CPU memory, else when the
  // staging ring gets there (at the latest in Drain()). Errors name `what`.
  void Write(FileSink& sink, uint64_t offset, const at::Tensor& t, const std::string& what,
             std::function<void(uint64_t)> done);

  // Writes the blob `data` at `offset`; returns its XXH3-64 (0 without `hash`).
  uint64_t WriteBytes(FileSink& sink, uint64_t offset, const std::string& data);

  // Completes every staged write.
  void Drain() { ring_.Drain(); }
  const StagingRing& ring() const { return ring_; }

 private:
  StagingRing ring_;
  bool hash_;
};

}  // namespace dcpp::internal
