#include "core/model/layout.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <sstream>

#include "core/base/error.h"

namespace dcpp {

std::string Placement::ToString() const {
  return kind == Kind::kShard ? StrCat("Shard(", dim, ")") : std::string("Replicate()");
}

Placement Placement::Parse(const std::string& text) {
  if (text == "Replicate()" || text == "Replicate") return Replicate();
  // "Shard(" [-] digits ")": nothing else (no spaces, no '+'), and a dimension that fits.
  constexpr char kOpen[] = "Shard(";
  const size_t open = sizeof(kOpen) - 1;
  if (text.size() > open + 1 && text.compare(0, open, kOpen) == 0 && text.back() == ')') {
    const char* first = text.data() + open;
    const char* last = text.data() + text.size() - 1;
    long long dim = 0;
    const auto [end, ec] = std::from_chars(first, last, dim);
    if (end == last && ec == std::errc::result_out_of_range) {
      throw Error(StrCat("placement '", text, "': the dimension ", std::string(first, last),
                         " is out of range"));
    }
    if (end == last && ec == std::errc()) {
      DCPP_CHECK(dim >= std::numeric_limits<int>::min() && dim <= std::numeric_limits<int>::max(),
                 "placement '", text, "': the dimension ", dim, " is out of range");
      return Shard(static_cast<int>(dim));
    }
  }
  throw Error("unknown placement '" + text + "' (expected Shard(d) or Replicate())");
}

int64_t Layout::world_size() const {
  int64_t n = 1;
  for (int64_t m : mesh) n *= m;
  return n;
}

std::string Layout::ToString() const {
  std::ostringstream os;
  for (size_t i = 0; i < placements.size(); ++i) os << (i ? "x" : "") << placements[i].ToString();
  os << "@[";
  for (size_t i = 0; i < mesh.size(); ++i) os << (i ? "," : "") << mesh[i];
  os << "]";
  return os.str();
}

void ChunkRange(int64_t n, int64_t parts, int64_t index, int64_t* start, int64_t* size) {
  const int64_t step = parts > 0 ? (n + parts - 1) / parts : n;
  const int64_t lo = std::min(n, step * index);
  const int64_t hi = std::min(n, step * (index + 1));
  *start = lo;
  *size = hi - lo;
}

Box BoxForRank(const std::vector<int64_t>& shape, const Layout& layout, int64_t rank) {
  DCPP_CHECK(layout.mesh.size() == layout.placements.size(), "layout ", layout.ToString(),
             ": one placement per mesh dimension is required");
  const int64_t world = layout.world_size();
  DCPP_CHECK(rank >= 0 && rank < world, "rank ", rank, " outside the mesh of ", world, " ranks");
  Box box = WholeBox(shape);
  // Coordinates of `rank` in the row-major mesh.
  std::vector<int64_t> coord(layout.mesh.size());
  int64_t r = rank;
  for (size_t k = layout.mesh.size(); k-- > 0;) {
    coord[k] = r % layout.mesh[k];
    r /= layout.mesh[k];
  }
  for (size_t k = 0; k < layout.placements.size(); ++k) {
    const Placement& p = layout.placements[k];
    if (p.kind != Placement::Kind::kShard) continue;
    DCPP_CHECK(p.dim >= 0 && p.dim < static_cast<int>(shape.size()), "placement ", p.ToString(),
               " for a tensor with ", shape.size(), " dimensions");
    int64_t start, size;
    ChunkRange(box.sizes[p.dim], layout.mesh[k], coord[k], &start, &size);
    box.offsets[p.dim] += start;
    box.sizes[p.dim] = size;
  }
  return box;
}

}  // namespace dcpp
