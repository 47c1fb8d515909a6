// The two checkpoint generations of the crash test (tests/crash/crash_test.cc): the same keys,
// dtypes and shapes, values that differ in every element, so that a folder can be told to
// hold exactly generation 0, exactly generation 1, or neither. The values are computed with
// integer arithmetic only, so every process (test driver, ranks) builds them bit for bit alike.
//
// Thread-safety: pure functions.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/state_dict.h"
#include "core/storage/open.h"

namespace dcpp::crash {

struct GenTensor {
  std::string key;
  at::Tensor value;  // the whole tensor
};

struct Generation {
  std::vector<GenTensor> tensors;
  std::string blob_key;
  std::string blob;  // the bytes entry's value
};

// Generation `gen` (0 or 1) of about `mib` MiB: four float32 matrices, a bfloat16 vector, an
// int64 matrix, a 0-d int64 step and one bytes entry.
Generation MakeGeneration(int gen, int64_t mib);

// Adds the chunks rank `rank` of `world` holds: Shard(0) of every tensor of dimension >= 1,
// the 0-d step replicated, the bytes entry.
void AddGeneration(const Generation& g, int world, int rank, StateDict& sd);

// What a folder holds.
struct FolderState {
  bool valid = false;    // verify found no problem (and DCP's CRC-32s match)
  std::string problem;   // why not valid, or why its content is neither generation
  int generation = -1;   // 0 or 1 when every key equals that generation bit for bit, else -1
};

// Verifies the checkpoint in `dir` (native or PyTorch DCP, `format`) like scripts/verify,
// then loads every key whole and compares it with `gens` (indexed by generation).
FolderState Inspect(const std::string& dir, Format format, const std::vector<Generation>& gens);

}  // namespace dcpp::crash
