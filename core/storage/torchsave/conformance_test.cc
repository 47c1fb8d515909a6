// The storage conformance suite (core/storage/testing/conformance.h) for plain torch.save
// files, which dcpp reads as a source only: a checkpoint is saved natively, loaded whole, and
// written as one torch.save file (`model.pt`) as torch.save lays it out: a typed storage per
// tensor (_rebuild_tensor_v2), or an untyped one with the dtype (_rebuild_tensor_v3) for
// dtypes without a typed storage class, and bytes entries as Python bytes objects. The format
// records no checksums that load checks.
#include <ATen/ATen.h>

#include <filesystem>
#include <map>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/torch_pickle_internal.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/testing/conformance.h"
#include "core/storage/torchsave/torchsave_test_util.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp::testing {
namespace {

using namespace torchsave_testing;  // NOLINT

void SaveAsTorchSave(const StateDict& sd, const std::string& dir) {
  TempDir native;
  save(sd, native.path());
  FileSystemReader src(native.path());
  const proto::Metadata md = ParseMetadata(src.ReadMetadata(), native.path());
  StateDict whole;
  for (const auto& t : md.tensors()) {
    whole.AddUnallocated(t.fqn(), DtypeFromName(t.dtype()), std::vector<int64_t>(t.shape().begin(), t.shape().end()),
                         Layout::Replicated(1), 0);
  }
  for (const auto& b : md.bytes()) whole.AddBytes(b.fqn(), "");
  load(whole, src);
  std::vector<std::pair<std::string, ValuePtr>> items;
  std::map<std::string, std::string> storages;
  for (const TensorEntry& e : whole.tensors()) {
    const at::Tensor t = e.chunks.at(0).tensor.contiguous();
    const std::string key = std::to_string(storages.size());
    const int64_t nbytes = t.numel() * t.element_size();
    storages[key] = std::string(static_cast<const char*>(t.const_data_ptr()), static_cast<size_t>(nbytes));
    const std::string dtype = DtypeName(e.dtype);
    const std::vector<int64_t> sizes = t.sizes().vec(), strides = t.strides().vec();
    const char* cls = torch_archive::StorageClass(dtype);
    items.emplace_back(e.fqn, cls ? Tensor(key, cls, t.numel(), 0, sizes, strides)
                                  : TensorV3(key, nbytes, dtype, 0, sizes, strides));
  }
  for (const BytesEntry& b : whole.bytes()) items.emplace_back(b.fqn, Value::Bytes(b.data));
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/model.pt", Archive(*Dict(std::move(items)), storages));
}

const bool kRegistered = [] {
  ConformanceParams p("TorchSaveConformance", *[] {
    static const Format f("torchsave");
    return &f;
  }());
  p.save = SaveAsTorchSave;
  p.decode_bytes = [](const std::string& archive) {
    const pickle::ValuePtr v = torch_archive::DecodeObject(archive, "blob");
    return v->Is(pickle::Value::Kind::kBytes) ? v->str : "not a bytes object: " + pickle::Repr(*v);
  };
  p.detects_corruption = false;
  RegisterStorageConformanceTests(p);
  return true;
}();

}  // namespace
}  // namespace dcpp::testing
