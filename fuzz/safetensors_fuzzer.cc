// libFuzzer target: the safetensors header (core/storage/safetensors/safetensors.h). The reader works on
// files, so each input is written to one file in a private temporary folder, read as a
// checkpoint, and its translated metadata parsed and validated as every tool would. The folder
// is $DCPP_FUZZ_TMP, else /dev/shm, else /tmp.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/storage/safetensors/safetensors.h"

namespace {

// Never destroyed, so the atexit cleanup can still read it.
const std::string& Path() {
  static const std::string* const path = [] {
    // /dev/shm when there is one: on a disk-backed /tmp each run is several times slower.
    const char* base = std::getenv("DCPP_FUZZ_TMP");
    if (base == nullptr || *base == '\0') base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string dir = std::string(base) + "/dcpp_fuzz_st.XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) std::abort();
    return new std::string(dir + "/model.safetensors");
  }();
  static const bool cleanup = std::atexit([] {
    ::unlink(path->c_str());
    ::rmdir(path->substr(0, path->rfind('/')).c_str());
  }) == 0;
  (void)cleanup;
  return *path;
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
