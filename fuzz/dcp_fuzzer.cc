// libFuzzer target: PyTorch DCP's .metadata pickle translated into dcpp's metadata
// (core/storage/dcp/dcp.h), reading each item's archive header from an in-memory data file, then
// that metadata serialized and validated as every tool does. The input is the pickle (first
// part, see SplitInput) and the bytes every data file holds (the rest).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/dcp.h"
#include "fuzz/memory_reader.h"

using namespace dcpp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [pickle, file] = fuzz::SplitInput(data, size);
  fuzz::MemoryReader files(pickle, file);
  try {
    IsDcpMetadata(pickle);
    DcpFiles(pickle, "fuzz");
  } catch (const Error&) {
  }
  try {
    const proto::Metadata md = ReadDcpMetadata(pickle, files, "fuzz", /*threads=*/1);
    ParseMetadata(SerializeMetadata(md), "fuzz");
  } catch (const Error&) {
  }
  return 0;
}
