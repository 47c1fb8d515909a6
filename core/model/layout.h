// Layouts: which box of a global tensor each rank holds.
//
// A Layout is a device mesh shape (1-D or 2-D, row-major rank order) and one Placement per
// mesh dimension: Shard(dim) splits `dim` with torch.chunk semantics (chunk size
// ceil(n / parts); trailing parts smaller or empty), Replicate gives every rank the whole
// extent. Over a 2-D mesh the placements apply in mesh-dimension order, as DTensor does
// (e.g. FSDP x TP = {Shard(0), Shard(1)} over {dp, tp}). Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/box.h"

namespace dcpp {

struct Placement {
  enum class Kind { kReplicate, kShard };
  Kind kind = Kind::kReplicate;
  int dim = 0;  // for kShard

  static Placement Shard(int dim) { return {Kind::kShard, dim}; }
  static Placement Replicate() { return {Kind::kReplicate, 0}; }
  std::string ToString() const;  // "Shard(0)" / "Replicate()"
  // Reads "Shard(d)" (d may be negative: counted from the last dimension) or "Replicate()"
  // (also "Replicate"); throws dcpp::Error otherwise.
  static Placement Parse(const std::string& text);
};

struct Layout {
  std::vector<int64_t> mesh;            // e.g. {2} or {2, 4}
  std::vector<Placement> placements;    // one per mesh dimension

  static Layout Sharded(int64_t world, int dim) { return {{world}, {Placement::Shard(dim)}}; }
  static Layout Replicated(int64_t world) { return {{world}, {Placement::Replicate()}}; }
  int64_t world_size() const;
  std::string ToString() const;  // "Shard(0)@[2]"
};

// The [start, start + size) that part `index` of `parts` gets of an extent `n` (torch.chunk).
void ChunkRange(int64_t n, int64_t parts, int64_t index, int64_t* start, int64_t* size);

// The box of `shape` that `rank` holds under `layout`. Throws dcpp::Error for a bad rank or a
// placement naming a dimension the tensor lacks.
Box BoxForRank(const std::vector<int64_t>& shape, const Layout& layout, int64_t rank);

}  // namespace dcpp
