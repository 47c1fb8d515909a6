// libFuzzer target: the safetensors header (core/storage/safetensors.h). The reader works on
// files, so each input is written to one file in a private temporary folder, read as a
// checkpoint, and its translated metadata parsed and validated as every tool would.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/metadata.h"
#include "core/storage/safetensors.h"

namespace {

const std::string& Path() {
  static const std::string path = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dcpp_fuzz_st.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    return tmpl + "/model.safetensors";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(Path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    dcpp::SafetensorsReader reader(Path());
    const dcpp::proto::Metadata md = dcpp::ParseMetadata(reader.ReadMetadata(), reader.Describe());
    for (const auto& t : md.tensors()) {
      for (const auto& c : t.chunks()) reader.Open(c.file());
    }
  } catch (const dcpp::Error&) {
  }
  return 0;
}
