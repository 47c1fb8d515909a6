// ExportSafetensors(): writes any dcpp checkpoint (any layout, any number of chunks) as a
// Hugging Face sharded safetensors checkpoint, offline and in bounded memory.
//
//   DST/model-00001-of-00003.safetensors   (5-digit, 1-based, as transformers names them)
//   DST/...
//   DST/model.safetensors.index.json        {"metadata": {"total_size": N},
//                                             "weight_map": {tensor name: shard file}}
//
// Tensors are assigned to shards in key order, greedily up to `max_shard_bytes` of tensor
// data (a tensor larger than that gets a shard of its own). Within a shard the header lists
// and the data area holds them as the safetensors library writes them: by element size
// (largest first, so every tensor is aligned to its element size), then by name; the header
// is padded with spaces to a multiple of 8 and the data is contiguous, with no holes. Its
// `__metadata__` is {"format": "pt"} plus the source's planner_data "safetensors.<key>" pairs
// (what SafetensorsReader recorded from an imported file).
//
// Each tensor streams through BandReader (core/engine/band_reader.h) in bands of rows of dimension 0,
// so at most `memory_budget` bytes of buffers are held whatever the checkpoint's size; source
// checksums are verified on the way (when the source records any). Bytes entries (opaque
// blobs) have no place in safetensors: they are skipped and listed in the stats.
//
// The files are written and committed by SafetensorsWriter
// (core/storage/safetensors/safetensors_writer.h).
// Atomic as far as the file system allows: everything is written under `.tmp` names in DST,
// fsynced, then renamed into place, the index last (one export at a time, under DST's
// .dcpp.lock). Safetensors has no single commit point: each file is replaced atomically, and
// a failure after the first rename is reported as an incomplete export ("run the export
// again"); with one shard the file in place then already holds the whole new data. A failed export removes what it wrote and
// leaves DST as it was; a DST that already holds safetensors files or an index is refused
// unless `overwrite` (then the old files that the new checkpoint does not reuse are removed
// after the new ones are in place).
//
// Thread-safety: one export per destination at a time; uses one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/storage/env.h"
#include "core/storage/safetensors/safetensors_writer.h"
#include "core/storage/storage.h"

namespace dcpp {

struct SafetensorsExportOptions {
  // Largest amount of tensor data in one shard file. Default: 5 GB (5'000'000'000 bytes, as
  // transformers' save_pretrained).
  int64_t max_shard_bytes = 5'000'000'000;
  // Upper bound on the bytes of band buffers held at once. A tensor one of whose rows of
  // dimension 0 does not fit is an error naming it. Default: 256 MiB.
  int64_t memory_budget = int64_t{256} << 20;
  // Replace safetensors files already in the destination. Default: false = refuse.
  bool overwrite = false;
  // Verify each source chunk's checksum while streaming (skipped when the source records
  // none, e.g. a safetensors source). Default: true.
  bool verify_checksums = true;
  // Casts on the way out, as ConvertOptions::dtype_casts (core/tools/dtype_cast.h), e.g.
  // {"bf16", "*norm*=fp32"}: an fp32 training checkpoint becomes a bf16 export, streaming.
  // Default: none.
  std::vector<std::string> dtype_casts;
  // Called after each band with (tensor bytes written so far, tensor bytes to write).
  std::function<void(int64_t, int64_t)> progress;
  // One export at a time writes into a destination (its .dcpp.lock): wait for another one
  // (true) or fail at once (false). Default: false.
  bool wait_for_lock = false;
  // Where the files go. Default: nullptr = the real filesystem (Env::Default()).
  Env* env = nullptr;
};

struct SafetensorsExportStats {
  std::vector<std::string> files;          // the shard files written, in order
  std::string index;                       // the index file name
  int64_t tensors = 0;
  int64_t tensors_cast = 0;                // written in another dtype (dtype_casts)
  int64_t total_size = 0;                  // bytes of tensor data (the index's total_size)
  int64_t bytes_written = 0;               // every byte of the shard files, headers included
  int64_t bytes_read = 0;                  // from the source's data files
  std::vector<std::string> skipped_bytes;  // bytes entries not exported, sorted
  bool checksums_verified = false;         // false when disabled or the source has none
  int64_t chunks_verified = 0;
  int64_t peak_buffer_bytes = 0;           // largest amount of band buffers held at once
  std::vector<std::string> warnings;       // what went wrong after the commit, which stands
};

SafetensorsExportStats ExportSafetensors(StorageReader& src, const std::string& dst_dir,
                                         const SafetensorsExportOptions& opt = {});

// SafetensorsShardName(), the shard files' names, is declared in safetensors_writer.h.

}  // namespace dcpp
