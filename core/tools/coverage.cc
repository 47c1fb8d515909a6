// Coverage by coordinate compression: the chunk boundaries cut the tensor into a grid of
// cells, each inside a chunk or not.
#include "core/tools/coverage.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/base/checked_math.h"
#include "core/model/box.h"

namespace dcpp {
namespace {

// Grids larger than this are not checked (a note says so); real checkpoints are far below.
constexpr int64_t kMaxCoverageCells = int64_t{1} << 24;

// Calls f(flat index) for every cell of the grid (row-major, `stride` per dimension) whose
// per-dimension index lies in [lo[d], hi[d]). Returns false as soon as f does.
template <typename F>
bool ForEachCell(const std::vector<int64_t>& lo, const std::vector<int64_t>& hi,
                 const std::vector<int64_t>& stride, F&& f) {
  const size_t nd = lo.size();
  for (size_t d = 0; d < nd; ++d) {
    if (lo[d] >= hi[d]) return true;
  }
  std::vector<int64_t> idx = lo;
  while (true) {
    int64_t flat = 0;
    for (size_t d = 0; d < nd; ++d) flat += idx[d] * stride[d];
    if (!f(flat)) return false;
    size_t d = nd;
    while (d > 0) {
      --d;
      if (++idx[d] < hi[d]) break;
      idx[d] = lo[d];
      if (d == 0) return true;
    }
    if (nd == 0) return true;
  }
}

}  // namespace

// Coordinate compression: the chunk boundaries cut each dimension into intervals; a cell of
// the resulting grid is either inside a chunk or not, so marking cells decides coverage.
Coverage CoverageOf(const std::vector<int64_t>& shape, const std::vector<Box>& boxes, bool disjoint) {
  Coverage cov;
  const Box whole = WholeBox(shape);
  if (whole.numel() == 0) return cov;
  // Disjoint boxes inside the shape whose element counts add up to the whole cover it. (Each
  // box lies inside the shape, but duplicates could still make the sum overflow.)
  std::optional<int64_t> sum = 0;
  for (const Box& b : boxes) {
    if (sum) sum = CheckedAdd(*sum, b.numel());
  }
  if (disjoint && sum && *sum == whole.numel()) return cov;

  const size_t nd = shape.size();
  std::vector<std::vector<int64_t>> cuts(nd);
  for (size_t d = 0; d < nd; ++d) {
    cuts[d] = {0, shape[d]};
    for (const Box& b : boxes) {
      if (b.empty()) continue;
      cuts[d].push_back(b.offsets[d]);
      cuts[d].push_back(b.offsets[d] + b.sizes[d]);
    }
    std::sort(cuts[d].begin(), cuts[d].end());
    cuts[d].erase(std::unique(cuts[d].begin(), cuts[d].end()), cuts[d].end());
  }
  std::vector<int64_t> stride(nd, 1), cells_per(nd);
  int64_t total = 1;
  for (size_t d = nd; d-- > 0;) {
    cells_per[d] = static_cast<int64_t>(cuts[d].size()) - 1;
    stride[d] = total;
    total *= cells_per[d];
    if (total > kMaxCoverageCells) {
      cov.checked = false;
      return cov;
    }
  }
  auto cell_of = [&](size_t d, int64_t coord) {
    return static_cast<int64_t>(std::lower_bound(cuts[d].begin(), cuts[d].end(), coord) - cuts[d].begin());
  };
  std::vector<uint8_t> covered(static_cast<size_t>(total), 0);
  for (const Box& b : boxes) {
    if (b.empty()) continue;
    std::vector<int64_t> lo(nd), hi(nd);
    for (size_t d = 0; d < nd; ++d) {
      lo[d] = cell_of(d, b.offsets[d]);
      hi[d] = cell_of(d, b.offsets[d] + b.sizes[d]);
    }
    ForEachCell(lo, hi, stride, [&](int64_t i) {
      covered[static_cast<size_t>(i)] = 1;
      return true;
    });
  }

  // Count the uncovered elements and find the first uncovered cell.
  int64_t first = -1;
  std::vector<int64_t> zero(nd, 0);
  ForEachCell(zero, cells_per, stride, [&](int64_t i) {
    if (covered[static_cast<size_t>(i)]) return true;
    if (first < 0) first = i;
    int64_t volume = 1;
    for (size_t d = 0; d < nd; ++d) {
      const int64_t k = i / stride[d] % cells_per[d];
      volume *= cuts[d][k + 1] - cuts[d][k];
    }
    cov.uncovered += volume;
    return true;
  });
  if (first < 0) return cov;
  cov.exact = false;
  // Grow the first uncovered cell, innermost dimension first, while the slab added next to it
  // is uncovered too, so the report shows the whole missing chunk in the usual cases.
  std::vector<int64_t> lo(nd), hi(nd);
  for (size_t d = 0; d < nd; ++d) {
    lo[d] = first / stride[d] % cells_per[d];
    hi[d] = lo[d] + 1;
  }
  for (size_t d = nd; d-- > 0;) {
    while (hi[d] < cells_per[d]) {
      std::vector<int64_t> slab_lo = lo, slab_hi = hi;
      slab_lo[d] = hi[d];
      slab_hi[d] = hi[d] + 1;
      auto uncovered = [&](int64_t i) { return !covered[static_cast<size_t>(i)]; };
      if (!ForEachCell(slab_lo, slab_hi, stride, uncovered)) break;
      ++hi[d];
    }
  }
  cov.first_gap.offsets.resize(nd);
  cov.first_gap.sizes.resize(nd);
  for (size_t d = 0; d < nd; ++d) {
    cov.first_gap.offsets[d] = cuts[d][lo[d]];
    cov.first_gap.sizes[d] = cuts[d][hi[d]] - cuts[d][lo[d]];
  }
  return cov;
}

}  // namespace dcpp
