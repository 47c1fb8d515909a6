// libFuzzer target: the torch.save zip reader (core/storage/dcp/torch_archive.h) on any bytes: the
// zip directory, the tensor item reader (strides and storage bounds) and the object decoder.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/error.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "fuzz/memory_reader.h"

using namespace dcpp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  fuzz::MemorySource src(bytes);
  try {
    torch_archive::ReadZipDirectory(src, 0, bytes.size(), "fuzz");
  } catch (const Error&) {
  }
  try {
    const torch_archive::StoredTensor t = torch_archive::ReadTensorItem(src, 0, bytes.size(), "fuzz");
    t.contiguous();
    t.data_offset();
  } catch (const Error&) {
  }
  try {
    torch_archive::IsTorchSaveArchive(bytes);
    const pickle::ValuePtr v = torch_archive::DecodeObject(bytes, "fuzz");
    pickle::Repr(*v, 1000);
  } catch (const Error&) {
  }
  return 0;
}
