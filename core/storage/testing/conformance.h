// The storage conformance suite: the behaviour every checkpoint format must show through the
// engine, registered once per format from that format's own test (tensorstore's
// RegisterKeyValueStoreOpsTests is the model):
//
//   // core/storage/<format>/conformance_test.cc
//   const bool registered = (RegisterStorageConformanceTests({"Native", ...}), true);
//
// Every test writes a checkpoint through `save` (and, for formats with a writer, through
// `writer` over a fault-injecting Env), opens it again with OpenReader (format detection
// included), and loads it into a fresh state dict: round trips of every dtype and of empty
// and 0-d tensors, resharding row-wise to column-wise, bytes entries, an overwrite that
// commits, a failed save that leaves the previous checkpoint, and corrupt or truncated data
// files that must be errors naming the file. Capability flags skip what a format cannot do.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "core/engine/save_load.h"
#include "core/storage/env.h"
#include "core/storage/registry.h"
#include "core/storage/storage.h"

namespace dcpp::testing {

struct ConformanceParams {
  ConformanceParams(std::string suite_name, Format f) : suite(std::move(suite_name)), format(f) {}
  std::string suite;  // the gtest suite name, e.g. "NativeConformance"
  Format format;      // what DetectFormat must say of a checkpoint `save` wrote
  // Writes `sd` as a checkpoint of the format into the folder `dir`, over what `dir` holds.
  std::function<void(const StateDict& sd, const std::string& dir)> save;
  // A writer of the format into `dir` whose every file operation goes through `env`; empty
  // for formats that are no save target (the failed-save test is then skipped).
  std::function<std::unique_ptr<StorageWriter>(const std::string& dir, Env* env)> writer;
  bool stores_bytes = true;   // bytes entries round-trip (safetensors holds only tensors)
  // A bytes entry as load() returns it -> the blob that was saved. Empty: the same bytes. (DCP
  // stores a blob as a torch.save'd Python bytes object, and load() returns that archive.)
  std::function<std::string(const std::string& loaded)> decode_bytes;
  bool detects_corruption = true;  // a flipped data byte fails the load (checksums, CRC-32)
  bool stores_plain = true;  // tensor bytes lie in the files as they are (false: compressed)
  LoadOptions load;           // how the tests load (e.g. DCP: verify_dcp_crc32)
};

// Registers the suite's tests for one format. Call before RUN_ALL_TESTS (a static initializer
// in the format's test file).
void RegisterStorageConformanceTests(const ConformanceParams& params);

}  // namespace dcpp::testing
