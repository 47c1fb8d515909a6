#include "core/model/box.h"

#include <algorithm>

#include "core/base/checked_math.h"
#include "core/base/error.h"

namespace dcpp {

int64_t Box::numel() const {
  const auto n = CheckedNumel(sizes);
  DCPP_CHECK(n, "box ", ToString(), " has more elements than fit in 64 bits");
  return *n;
}

// Safe for any box, including malformed ones read from a file (offsets and sizes of different
// lengths, ends that overflow): it is what error messages about such boxes print.
std::string Box::ToString() const {
  // (Plain appends, no ostringstream: this runs for every chunk a save writes.)
  std::string s = "[";
  const size_t nd = std::max(offsets.size(), sizes.size());
  for (size_t d = 0; d < nd; ++d) {
    if (d) s += ", ";
    if (d >= offsets.size()) {
      s += "?:+" + std::to_string(sizes[d]);
    } else if (d >= sizes.size()) {
      s += std::to_string(offsets[d]) + ":?";
    } else if (const auto end = CheckedAdd(offsets[d], sizes[d])) {
      s += std::to_string(offsets[d]) + ":" + std::to_string(*end);
    } else {
      s += std::to_string(offsets[d]) + ":+" + std::to_string(sizes[d]);
    }
  }
  s += "]";
  if (offsets.size() != sizes.size()) {
    s += " (" + std::to_string(offsets.size()) + " offsets, " + std::to_string(sizes.size()) + " sizes)";
  }
  return s;
}

Box WholeBox(const std::vector<int64_t>& shape) {
  return Box{std::vector<int64_t>(shape.size(), 0), shape};
}

std::optional<Box> Intersect(const Box& a, const Box& b) {
  DCPP_CHECK(a.sizes.size() == b.sizes.size() && a.offsets.size() == a.sizes.size() &&
                 b.offsets.size() == b.sizes.size(),
             "box rank mismatch: ", a.ToString(), " vs ", b.ToString());
  Box r;
  r.offsets.resize(a.sizes.size());
  r.sizes.resize(a.sizes.size());
  for (size_t d = 0; d < a.sizes.size(); ++d) {
    const int64_t lo = std::max(a.offsets[d], b.offsets[d]);
    const int64_t hi = std::min(a.offsets[d] + a.sizes[d], b.offsets[d] + b.sizes[d]);
    if (hi <= lo) return std::nullopt;
    r.offsets[d] = lo;
    r.sizes[d] = hi - lo;
  }
  return r;
}

bool Contains(const Box& outer, const Box& inner) {
  const size_t nd = outer.sizes.size();
  if (outer.offsets.size() != nd || inner.offsets.size() != nd || inner.sizes.size() != nd) {
    return false;
  }
  for (size_t d = 0; d < nd; ++d) {
    if (inner.sizes[d] < 0 || outer.sizes[d] < 0) return false;
    const auto inner_end = CheckedAdd(inner.offsets[d], inner.sizes[d]);
    const auto outer_end = CheckedAdd(outer.offsets[d], outer.sizes[d]);
    if (!inner_end || !outer_end || inner.offsets[d] < outer.offsets[d] || *inner_end > *outer_end) {
      return false;
    }
  }
  return true;
}

Box Relative(const Box& region, const Box& origin) {
  Box r = region;
  for (size_t d = 0; d < r.offsets.size(); ++d) r.offsets[d] -= origin.offsets[d];
  return r;
}

std::vector<ByteRun> RunsOf(const Box& chunk, const Box& region, int64_t elem_size) {
  const size_t nd = chunk.sizes.size();
  if (region.numel() == 0) return {};
  const Box rel = Relative(region, chunk);
  // Row-major strides of the chunk, in elements.
  std::vector<int64_t> stride(nd, 1);
  for (size_t d = nd; d-- > 1;) stride[d - 1] = stride[d] * chunk.sizes[d];
  // The innermost dimensions the region spans completely form one contiguous block together
  // with the first dimension (from the inside) that it spans partially.
  size_t split = nd;  // dims [split, nd) are contiguous within one run
  int64_t run_elems = 1;
  while (split > 0) {
    const size_t d = split - 1;
    run_elems *= rel.sizes[d];
    --split;
    if (rel.sizes[d] != chunk.sizes[d]) break;
  }
  std::vector<ByteRun> runs;
  // Iterate over the outer index space [0, split).
  std::vector<int64_t> idx(split, 0);
  while (true) {
    int64_t off = 0;
    for (size_t d = 0; d < nd; ++d) {
      off += (rel.offsets[d] + (d < split ? idx[d] : 0)) * stride[d];
    }
    const ByteRun run{off * elem_size, run_elems * elem_size};
    if (!runs.empty() && runs.back().offset + runs.back().length == run.offset) {
      runs.back().length += run.length;
    } else {
      runs.push_back(run);
    }
    size_t d = split;
    while (d > 0) {
      --d;
      if (++idx[d] < rel.sizes[d]) break;
      idx[d] = 0;
      if (d == 0) return runs;
    }
    if (split == 0) return runs;
  }
}

std::vector<Block> SplitRowMajor(const Box& box, int64_t elem_size, int64_t max_bytes) {
  const size_t nd = box.sizes.size();
  if (nd == 0) return {{box, 0}};
  if (box.numel() == 0) return {};
  // stride[d]: elements per index of dimension d.
  std::vector<int64_t> stride(nd, 1);
  for (size_t d = nd; d-- > 1;) stride[d - 1] = stride[d] * box.sizes[d];
  size_t k = 0;  // the dimension that is cut into ranges
  while (k + 1 < nd && stride[k] * elem_size > max_bytes) ++k;
  const int64_t per = std::max<int64_t>(1, max_bytes / (stride[k] * elem_size));
  std::vector<Block> blocks;
  std::vector<int64_t> idx(k, 0);  // indices of the dimensions before k
  while (true) {
    for (int64_t j = 0; j < box.sizes[k]; j += per) {
      Block b{box, 0};
      int64_t elem = j * stride[k];
      for (size_t d = 0; d < k; ++d) {
        b.box.offsets[d] += idx[d];
        b.box.sizes[d] = 1;
        elem += idx[d] * stride[d];
      }
      b.box.offsets[k] += j;
      b.box.sizes[k] = std::min(per, box.sizes[k] - j);
      b.byte_offset = elem * elem_size;
      blocks.push_back(std::move(b));
    }
    size_t d = k;
    while (d > 0) {
      --d;
      if (++idx[d] < box.sizes[d]) break;
      idx[d] = 0;
      if (d == 0) return blocks;
    }
    if (k == 0) return blocks;
  }
}

std::vector<ByteRun> CoalesceRuns(std::vector<ByteRun> runs, int64_t max_gap) {
  std::vector<ByteRun> out;
  for (const ByteRun& r : runs) {
    if (!out.empty()) {
      ByteRun& last = out.back();
      const int64_t gap = r.offset - (last.offset + last.length);
      const int64_t merged = r.offset + r.length - last.offset;
      if (gap >= 0 && gap <= max_gap && gap * 20 <= merged) {
        last.length = merged;
        continue;
      }
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace dcpp
