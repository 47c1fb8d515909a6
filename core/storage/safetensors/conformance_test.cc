// The storage conformance suite (core/storage/testing/conformance.h) for safetensors, which
// dcpp reads as a checkpoint and writes only as an export: a checkpoint is saved natively,
// then exported. Safetensors holds no bytes entries and no checksums.
#include "core/storage/native/filesystem.h"
#include "core/storage/testing/conformance.h"
#include "core/testing/temp_dir.h"
#include "core/tools/safetensors_export.h"

namespace dcpp::testing {
namespace {

const bool kRegistered = [] {
  ConformanceParams p("SafetensorsConformance", Format::kSafetensors);
  p.save = [](const StateDict& sd, const std::string& dir) {
    TempDir native;
    save(sd, native.path());
    SafetensorsExportOptions opt;
    opt.overwrite = true;
    FileSystemReader src(native.path());
    ExportSafetensors(src, dir, opt);
  };
  p.stores_bytes = false;
  p.detects_corruption = false;
  RegisterStorageConformanceTests(p);
  return true;
}();

}  // namespace
}  // namespace dcpp::testing
