// Diff(): compares two native checkpoints by value, key by key, whatever their layouts (one
// saved FSDP-sharded over 4 ranks, the other tensor-parallel over 2 compare equal when their
// tensors hold the same values).
//
// Both sides of each tensor are streamed with BandReader in the same bands of rows of dim 0,
// through at most `memory_budget` bytes of buffers, so a checkpoint of any size is compared in
// bounded memory; every chunk's checksum is verified as it streams. A checksum mismatch, a
// tensor whose chunks do not cover it, or an unreadable file is an error (dcpp::Error naming the
// key and file), not a difference.
//
//   dcpp::DiffOptions opt;
//   opt.atol = 1e-6;
//   const dcpp::DiffReport r = dcpp::Diff("/ckpt/fsdp", "/ckpt/tp", opt);
//   for (const auto& d : r.differences) std::puts(dcpp::DescribeDifference(d).c_str());
//
// Thread-safety: Diff() may run concurrently on different readers; it uses one thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/storage.h"

namespace dcpp {

struct DiffOptions {
  // Largest |a - b| still counted equal for floating and complex dtypes (NaN equals NaN).
  // Integer and bool dtypes always compare exactly. Default: 0 = bitwise equality (so -0.0
  // differs from 0.0 and NaNs must have the same bits).
  double atol = 0;
  // Upper bound on the bytes of band buffers held at once (both sides and staging). A tensor
  // one of whose rows of dim 0 does not fit is an error naming it. Default: 256 MiB.
  int64_t memory_budget = int64_t{256} << 20;
  // Verify each chunk's and blob's XXH3-64 checksum while streaming. Default: true.
  bool verify_checksums = true;
};

// One key that differs.
struct KeyDiff {
  std::string key;
  // "only in A", "only in B", "dtype" (also a tensor on one side and bytes on the other),
  // "shape", "values" (tensors), "bytes" (bytes entries: length or contents).
  std::string kind;
  std::string detail;          // e.g. "float32 vs bfloat16", "[16, 10] vs [10, 16]"
  int64_t numel = 0;           // "values": elements of the tensor; "bytes": bytes of the blob
  int64_t mismatched = 0;      // "values": elements that differ; "bytes": bytes that differ
  double max_abs_diff = 0;     // "values": largest |a - b| over elements finite on both sides
  std::string first_index;     // first differing element (row-major) as "[3, 7]"; "[]" for 0-d
};

struct DiffReport {
  std::vector<KeyDiff> differences;  // sorted by key
  int64_t keys_compared = 0;   // keys present on both sides
  int64_t bytes_compared = 0;  // bytes of data compared (one side's worth)
  bool identical() const { return differences.empty(); }
};

DiffReport Diff(StorageReader& a, StorageReader& b, const DiffOptions& opt = {});
DiffReport Diff(const std::string& a_dir, const std::string& b_dir, const DiffOptions& opt = {});

// One line for a difference, e.g.
//   "net2.weight: 3 of 160 elements differ (max |a-b| 0.5, first at [2, 7])"
//   "only in A: optim.state.x"
//   "net1.weight: dtype float32 vs bfloat16"
std::string DescribeDifference(const KeyDiff& d);

}  // namespace dcpp
