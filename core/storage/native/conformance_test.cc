// The storage conformance suite (core/storage/testing/conformance.h) for the native format.
#include "core/storage/native/filesystem.h"
#include "core/storage/testing/conformance.h"

namespace dcpp::testing {
namespace {

const bool kRegistered = [] {
  ConformanceParams p("NativeConformance", Format::kNative);
  p.save = [](const StateDict& sd, const std::string& dir) { save(sd, dir); };
  p.writer = [](const std::string& dir, Env* env) -> std::unique_ptr<StorageWriter> {
    return std::make_unique<FileSystemWriter>(dir, env);
  };
  RegisterStorageConformanceTests(p);
  return true;
}();

}  // namespace
}  // namespace dcpp::testing
