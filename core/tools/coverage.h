// Whether a tensor's chunks cover it exactly, and if not, where the first gap is: the coverage
// check of Verify (verify.h). Internal to core/tools. A pure function; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "core/model/box.h"

namespace dcpp {

// How much of a tensor its chunks cover.
struct Coverage {
  bool exact = true;
  bool checked = true;  // false when there were too many chunk boundaries to check
  Box first_gap;        // the first uncovered box in row-major order (when !exact)
  int64_t uncovered = 0;
};

// The coverage of a tensor of `shape` by the chunk `boxes` (each inside the shape).
// `disjoint`: the caller knows no two boxes overlap, so matching element counts prove
// coverage without building the grid. Grids of more than 2^24 cells (chunk boundaries cut
// into pieces) are not checked: then `checked` is false.
Coverage CoverageOf(const std::vector<int64_t>& shape, const std::vector<Box>& boxes, bool disjoint);

}  // namespace dcpp
