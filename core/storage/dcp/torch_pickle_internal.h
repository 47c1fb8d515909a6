// What the data.pkl of a torch.save archive says, shared by torch_archive's .cc files (not part
// of torch_archive.h's API): the globals each use allows, the legacy typed storage classes, and
// the tensor a rebuild call (torch._utils._rebuild_tensor_v2 / _v3 / _rebuild_parameter) names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/dcp/pickle.h"

namespace dcpp {
namespace torch_archive {

// The globals a torch.save'd tensor's data.pkl names.
bool TensorGlobal(const std::string& module, const std::string& name);

// Plain Python values a DCP bytes item may hold, besides tensors.
bool ObjectGlobal(const std::string& module, const std::string& name);

// What torch.load(weights_only=True) allows a state dict besides ObjectGlobal's: more ways
// to rebuild tensors and parameters, layouts and memory formats, a few builtins. None of
// them runs code of the checkpoint's choosing.
bool SafeGlobal(const std::string& module, const std::string& name);

// The dtype of a legacy typed storage class (torch.FloatStorage...).
std::string StorageDtype(const std::string& cls, const std::string& where);

// The legacy typed storage class of a dcpp dtype name (FloatStorage...), or null for a dtype
// that has none (PyTorch then writes an UntypedStorage and the dtype).
const char* StorageClass(const std::string& dtype);

// The ints of a tuple, list or torch.Size; errors name `what`.
std::vector<int64_t> IntTuple(const pickle::ValuePtr& v, const std::string& what);

// A tensor named by a rebuild call: its dtype, geometry and storage key.
struct TensorRef {
  std::string dtype;
  std::string key;
  int64_t storage_offset = 0;
  std::vector<int64_t> sizes, strides;
};

// True for a kObject that calls one of the rebuild functions TensorGlobal allows.
bool IsRebuild(const pickle::Value& v);

// The tensor a rebuild call names; checks its dtype and that sizes and strides agree. Errors
// name `where`.
TensorRef ParseRebuild(const pickle::Value& call, const std::string& where);

// Checks that every element of `t` lies inside a storage of `storage_bytes` bytes.
void CheckInside(const TensorRef& t, int64_t es, uint64_t storage_bytes, const std::string& where);

}  // namespace torch_archive
}  // namespace dcpp
