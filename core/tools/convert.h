// convert(): turns a checkpoint saved in one layout into another, offline, in bounded memory.
//
// A conversion planner (Lua, e.g. planners/fsdp_to_tp.lua) names the target key and layout of
// every saved key; the save planner's global step (the conversion script's own save_global,
// else the default) places the target chunks in files, one set per target rank. The engine
// then streams each tensor in bands of rows through at most `memory_budget` bytes of buffers
// (two halves, so that reading one band overlaps writing the previous one; bands are kept to
// a few MiB when rows allow, so that data is hashed and written while still in cache), verifies every
// source chunk's checksum, writes every target chunk with its own, and commits the
// destination's metadata atomically. A failed conversion removes what it wrote and leaves any
// checkpoint already in the destination as it was.
//
//   dcpp::ConvertOptions opt;
//   opt.planner = "planners/fsdp_to_tp.lua";   // a file, or the embedded one of that name
//   opt.world_size = 2;
//   dcpp::convert("/ckpt/fsdp", "/ckpt/tp", opt);
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/planner/limits.h"
#include "core/storage/open.h"
#include "core/storage/storage.h"

namespace dcpp {

// The smallest ConvertOptions::memory_budget convert() accepts: 8 KiB.
constexpr int64_t kMinConvertMemoryBudget = int64_t{8} << 10;

struct ConvertOptions {
  // The conversion planner: a path, or the name of an embedded one. Default: fsdp_to_tp.
  std::string planner = "planners/fsdp_to_tp.lua";
  // Ranks of the target layout. Default: 2.
  int world_size = 2;
  // The planner's options (--set key=value); a key the planner does not declare is an error.
  std::map<std::string, std::string> planner_options;
  // Bounds on the planner script (core/planner/limits.h): Lua instructions per call into it
  // (P.convert, P.save_global) and bytes its Lua state may hold; past either, convert fails
  // with an error naming the script and the limit, before anything is written.
  // 0 = unlimited. Default: 10^10 instructions, 8 GiB.
  int64_t planner_instruction_limit = kDefaultPlannerInstructionLimit;
  int64_t planner_memory_limit = kDefaultPlannerMemoryLimit;
  // Upper bound on the bytes of data buffers held at once, at least kMinConvertMemoryBudget.
  // Default: 1 GiB.
  int64_t memory_budget = int64_t{1} << 30;
  // Replace a checkpoint already committed in the destination (it stays intact until the new
  // one commits). Default: false = refuse.
  bool overwrite = false;
  // When another save or convert is writing into the destination (it holds the folder's
  // lock): wait for it (true) or fail at once (false). Default: false.
  bool wait_for_lock = false;
  // For convert(src_dir, dst_dir): the format written (the source's is detected). Default:
  // native.
  Format format = Format::kNative;
  bool verify_checksums = true;
  // Casts on the way out (core/tools/dtype_cast.h): "bf16" casts every float64/32/16/bf16
  // tensor, "PATTERN=DTYPE" the target keys matching the glob (first match wins; DTYPE may be
  // "keep"), e.g. {"bf16", "*norm*=fp32"}. Values round as Tensor.to() does; checksums are of
  // the cast data. Default: none (every tensor keeps its dtype).
  std::vector<std::string> dtype_casts;
  std::string creator = "dcpp convert";
  // Called after each batch of writes with (bytes written so far, bytes to write), from the
  // writer thread.
  std::function<void(int64_t, int64_t)> progress;
};

// One key of the result, for reports.
struct ConvertedKey {
  std::string key, source;
  bool is_bytes = false;
  std::string dtype;         // as saved
  std::string target_dtype;  // as written: dtype, or what ConvertOptions::dtype_casts made it
  std::vector<int64_t> shape;
  std::string source_layout;  // inferred from the saved chunks, e.g. "Shard(0)@[4]", "whole"
  std::string target_layout;  // e.g. "Shard(1)@[2]", "Replicate()@[2]"
  int64_t bytes = 0;          // bytes of the (global) tensor or blob
};

struct ConvertStats {
  std::vector<ConvertedKey> keys;  // in output order
  std::vector<std::string> dropped;  // saved keys the planner left out
  std::vector<int64_t> mesh;
  int source_world_size = 0;
  int64_t bytes_read = 0, bytes_written = 0, files = 0, chunks_verified = 0;
  int64_t peak_buffer_bytes = 0;  // largest amount of buffer memory in use at once
  // What to be told: what went wrong after the commit, which stands (see
  // SaveStats::warnings); bytes entries carried over (torch.save'd objects, as PyTorch DCP
  // stores them) whose pickle names globals outside torch.load(weights_only=True)'s safe list,
  // which PyTorch's dcp.load would import and call (dcpp never runs them).
  std::vector<std::string> warnings;
};

ConvertStats convert(StorageReader& src, StorageWriter& dst, const ConvertOptions& opt);
ConvertStats convert(const std::string& src_dir, const std::string& dst_dir,
                     const ConvertOptions& opt);

// How a tensor is split into `chunks` (boxes of `shape`), as a layout string: "whole" for one
// chunk covering it, "Shard(d)@[k]" for k pieces along one dimension, "Shard(a)xShard(b)@[m,n]"
// for a grid, else "<k> chunks".
std::string DescribeChunking(const std::vector<int64_t>& shape,
                             const std::vector<std::vector<int64_t>>& offsets,
                             const std::vector<std::vector<int64_t>>& sizes);

}  // namespace dcpp
