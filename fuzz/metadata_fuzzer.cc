// libFuzzer target: the native .metadata (core/format/metadata.h) parsed and validated both ways, then
// what the tools do with metadata that passed: InspectText, InspectJson, and Verify against
// in-memory data files. The input is the .metadata (first part, see SplitInput) and the bytes
// every data file holds (the rest).
#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/tools/inspect.h"
#include "core/tools/verify.h"
#include "fuzz/memory_reader.h"

using namespace dcpp;

// protobuf logs every string field that is not UTF-8; ParseMetadata's error is what counts.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [metadata, file] = fuzz::SplitInput(data, size);
  for (Conflicts c : {Conflicts::kRefuse, Conflicts::kAllow}) {
    try {
      const proto::Metadata md = ParseMetadata(metadata, "fuzz", c);
      InspectText(md);
      InspectJson(md).dump();
      for (const auto& t : md.tensors()) {
        for (const auto& chunk : t.chunks()) ChunkBox(chunk).ToString();
      }
    } catch (const Error&) {
    }
  }
  // Verify reports every problem of the checkpoint and throws only for bad options.
  fuzz::MemoryReader reader(metadata, file);
  VerifyOptions opt;
  opt.thread_count = 1;
  opt.buffer_bytes = 64;
  Verify(reader, opt);
  return 0;
}
