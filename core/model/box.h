// Box geometry for chunks of N-d tensors: intersection, and the byte runs a region occupies
// inside a chunk stored row-major. Pure functions on small vectors; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dcpp {

// A box of a global tensor: offsets[d] and sizes[d] per dimension. A 0-d tensor is the box
// with no dimensions (one element).
struct Box {
  std::vector<int64_t> offsets;
  std::vector<int64_t> sizes;

  int64_t numel() const;  // throws dcpp::Error when the count does not fit in int64
  bool empty() const { return numel() == 0; }
  bool operator==(const Box& o) const { return offsets == o.offsets && sizes == o.sizes; }
  bool operator!=(const Box& o) const { return !(*this == o); }
  bool operator<(const Box& o) const {
    return offsets != o.offsets ? offsets < o.offsets : sizes < o.sizes;
  }
  std::string ToString() const;  // "[0:8, 0:10]"
};

// The whole of a tensor of `shape`.
Box WholeBox(const std::vector<int64_t>& shape);

// The common part of two boxes of the same rank, or nullopt if it is empty.
std::optional<Box> Intersect(const Box& a, const Box& b);

// True when `inner` lies entirely inside `outer`. False for malformed boxes (ranks that differ,
// negative sizes, ends beyond int64), so it is safe on boxes read from untrusted metadata.
bool Contains(const Box& outer, const Box& inner);

// `region` (global coordinates) relative to `origin`'s offsets.
Box Relative(const Box& region, const Box& origin);

// A range of bytes inside a chunk's storage.
struct ByteRun {
  int64_t offset;
  int64_t length;
};

// The byte runs, in increasing order, that `region` (inside `chunk`, global coordinates)
// occupies when `chunk` is stored contiguously row-major with `elem_size`-byte elements.
// Runs that touch are merged, so a region spanning whole trailing dimensions is one run.
std::vector<ByteRun> RunsOf(const Box& chunk, const Box& region, int64_t elem_size);

// A sub-box of a box, contiguous in the box's row-major layout, and where its bytes start.
struct Block {
  Box box;             // global coordinates
  int64_t byte_offset; // from the start of the enclosing box's row-major bytes
};

// Splits `box` into blocks of at most `max_bytes` (or one element, if larger), in row-major
// order, each contiguous: whole trailing dimensions, a range of one dimension, single indices
// before it. Used to stage data through a bounded buffer whatever the tensor's shape.
std::vector<Block> SplitRowMajor(const Box& box, int64_t elem_size, int64_t max_bytes);

// Merges runs (sorted by offset) whose gap is small enough that reading it costs less than a
// separate read: gap <= max_gap and gap <= (merged length) / 20 (so at most 5% extra bytes).
std::vector<ByteRun> CoalesceRuns(std::vector<ByteRun> runs, int64_t max_gap);

}  // namespace dcpp
