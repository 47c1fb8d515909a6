// Test helper for the inspect and verify tests (testonly): a small checkpoint saved by the real
// engine, and reading, finding in and rewriting its metadata.
#pragma once

#include <cstdint>
#include <string>

#include "core/format/metadata.pb.h"
#include "core/testing/temp_dir.h"

namespace dcpp::testing {

// The metadata in `d`, parsed; and `md` written there in its place.
proto::Metadata Md(const TempDir& d);
void WriteMd(const TempDir& d, const proto::Metadata& md);

// net1.weight [16, 10] in two row shards, net1.bias whole, a 0-d step, a 2-d grid of four
// chunks, and a blob; two writer threads, so two data files.
void SaveSample(const TempDir& dir);

// The tensor `key` of `md`; throws dcpp::Error if there is none.
const proto::TensorMeta& Tensor(const proto::Metadata& md, const std::string& key);
proto::TensorMeta& MutableTensor(proto::Metadata& md, const std::string& key);

// The bytes of every chunk and blob together.
uint64_t SumOfLengths(const proto::Metadata& md);

}  // namespace dcpp::testing
