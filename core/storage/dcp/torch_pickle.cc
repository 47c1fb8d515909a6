// What the data.pkl of a torch.save archive says: allowed globals, storage classes, rebuild
// calls (see torch_pickle_internal.h).
#include "core/storage/dcp/torch_pickle_internal.h"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/model/dtype.h"

namespace dcpp {
namespace torch_archive {

using pickle::Value;
using pickle::ValuePtr;

// The globals a torch.save'd tensor's data.pkl names.
bool TensorGlobal(const std::string& module, const std::string& name) {
  if (module == "torch._utils") {
    return name == "_rebuild_tensor_v2" || name == "_rebuild_tensor_v3" || name == "_rebuild_parameter";
  }
  if (module == "collections") return name == "OrderedDict";
  if (module == "torch.storage") return name == "UntypedStorage";
  if (module == "torch") {
    if (name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0) return true;
    return IsDtypeName(name);
  }
  return false;
}

// Plain Python values a DCP bytes item may hold, besides tensors.
bool ObjectGlobal(const std::string& module, const std::string& name) {
  if (TensorGlobal(module, name)) return true;
  if (module == "_codecs") return name == "encode";
  if (module == "builtins" || module == "__builtin__") {
    return name == "set" || name == "frozenset" || name == "bytearray";
  }
  if (module == "torch") return name == "Size" || name == "device";
  return false;
}

// What torch.load(weights_only=True) allows a state dict besides ObjectGlobal's: more ways
// to rebuild tensors and parameters, layouts and memory formats, a few builtins. None of
// them runs code of the checkpoint's choosing.
bool SafeGlobal(const std::string& module, const std::string& name) {
  if (ObjectGlobal(module, name)) return true;
  static const std::set<std::pair<std::string, std::string>> kSafe = {
      {"torch._utils", "_rebuild_parameter_with_state"},
      {"torch._utils", "_rebuild_sparse_tensor"},
      {"torch._utils", "_rebuild_meta_tensor_no_storage"},
      {"torch._utils", "_rebuild_nested_tensor"},
      {"torch._utils", "_rebuild_qtensor"},
      {"torch._utils", "_rebuild_wrapper_subclass"},
      {"torch._utils", "_rebuild_device_tensor_from_numpy"},
      {"torch._utils", "_rebuild_tensor"},
      {"torch._tensor", "_rebuild_from_type_v2"},
      {"torch.nn.parameter", "Parameter"},
      {"torch.serialization", "_get_layout"},
      {"torch", "Tensor"},
      {"torch", "strided"},
      {"torch", "sparse_coo"},
      {"torch", "sparse_csr"},
      {"torch", "contiguous_format"},
      {"torch", "channels_last"},
      {"torch", "preserve_format"},
      {"collections", "Counter"},
      {"builtins", "complex"},
      {"builtins", "slice"},
      {"builtins", "range"},
  };
  return kSafe.count({module, name}) > 0;
}

// The dtype of a legacy typed storage class (torch.FloatStorage...).
std::string StorageDtype(const std::string& cls, const std::string& where) {
  static const std::map<std::string, std::string> kTypes = {
      {"FloatStorage", "float32"},       {"DoubleStorage", "float64"},
      {"HalfStorage", "float16"},        {"BFloat16Storage", "bfloat16"},
      {"LongStorage", "int64"},          {"IntStorage", "int32"},
      {"ShortStorage", "int16"},         {"CharStorage", "int8"},
      {"ByteStorage", "uint8"},          {"BoolStorage", "bool"},
      {"ComplexFloatStorage", "complex64"}, {"ComplexDoubleStorage", "complex128"},
  };
  auto it = kTypes.find(cls);
  DCPP_CHECK(it != kTypes.end(), where, ": tensor storage type torch.", cls, " is not supported");
  return it->second;
}

const char* StorageClass(const std::string& dtype) {
  static const std::map<std::string, const char*> kClasses = {
      {"float32", "FloatStorage"},       {"float64", "DoubleStorage"},
      {"float16", "HalfStorage"},        {"bfloat16", "BFloat16Storage"},
      {"int64", "LongStorage"},          {"int32", "IntStorage"},
      {"int16", "ShortStorage"},         {"int8", "CharStorage"},
      {"uint8", "ByteStorage"},          {"bool", "BoolStorage"},
      {"complex64", "ComplexFloatStorage"}, {"complex128", "ComplexDoubleStorage"},
  };
  auto it = kClasses.find(dtype);
  return it == kClasses.end() ? nullptr : it->second;
}

std::vector<int64_t> IntTuple(const ValuePtr& v, const std::string& what) {
  DCPP_CHECK(v != nullptr, what, " is missing");
  std::vector<int64_t> out;
  const ValuePtr seq = v->IsObjectOf("torch", "Size") && v->args && !v->args->items.empty()
                           ? v->args->items[0]
                           : v;
  for (const ValuePtr& x : seq->AsSeq(what)) out.push_back(x->AsInt(what));
  return out;
}

bool IsRebuild(const Value& v) {
  return v.IsObjectOf("torch._utils", "_rebuild_tensor_v2") ||
         v.IsObjectOf("torch._utils", "_rebuild_tensor_v3") ||
         v.IsObjectOf("torch._utils", "_rebuild_parameter");
}

TensorRef ParseRebuild(const Value& call, const std::string& where) {
  if (call.IsObjectOf("torch._utils", "_rebuild_parameter")) {
    const auto& a = call.args->AsSeq(where + ": _rebuild_parameter arguments");
    DCPP_CHECK(!a.empty() && IsRebuild(*a[0]), where, ": _rebuild_parameter without a tensor");
    return ParseRebuild(*a[0], where);
  }
  const bool v3 = call.IsObjectOf("torch._utils", "_rebuild_tensor_v3");
  const auto& a = call.args->AsSeq(where + ": tensor arguments");
  DCPP_CHECK(a.size() >= (v3 ? 7u : 4u), where, ": tensor rebuild call has ", a.size(), " arguments");
  DCPP_CHECK(a[0]->Is(Value::Kind::kPersistent), where, ": tensor without a storage");
  const auto& pid = a[0]->args->AsSeq(where + ": storage id");
  DCPP_CHECK(pid.size() >= 5 && pid[0]->Is(Value::Kind::kStr) && pid[0]->str == "storage" &&
                 pid[1]->Is(Value::Kind::kGlobal),
             where, ": unexpected storage id ", pickle::Repr(*a[0]->args));
  TensorRef t;
  t.key = pid[2]->AsStr(where + ": storage key");
  t.storage_offset = a[1]->AsInt(where + ": storage offset");
  t.sizes = IntTuple(a[2], where + ": tensor sizes");
  t.strides = IntTuple(a[3], where + ": tensor strides");
  if (v3) {
    DCPP_CHECK(a[6]->Is(Value::Kind::kGlobal) && a[6]->module == "torch", where,
               ": tensor dtype ", pickle::Repr(*a[6]), " is not a torch dtype");
    t.dtype = a[6]->name;
  } else {
    t.dtype = StorageDtype(pid[1]->name, where);
  }
  DtypeFromName(t.dtype);  // throws for a dtype dcpp cannot hold
  DCPP_CHECK(t.sizes.size() == t.strides.size(), where, ": tensor has ", t.sizes.size(),
             " sizes but ", t.strides.size(), " strides");
  return t;
}

// Checks that every element of `t` lies inside a storage of `storage_bytes` bytes.
void CheckInside(const TensorRef& t, int64_t es, uint64_t storage_bytes, const std::string& where) {
  int64_t numel = 1, last = t.storage_offset;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    DCPP_CHECK(t.sizes[d] >= 0 && t.strides[d] >= 0, where, ": negative size or stride");
    numel *= t.sizes[d];
    if (t.sizes[d] > 0) last += (t.sizes[d] - 1) * t.strides[d];
  }
  DCPP_CHECK(t.storage_offset >= 0, where, ": negative storage offset");
  DCPP_CHECK(numel == 0 || static_cast<uint64_t>((last + 1) * es) <= storage_bytes, where,
             ": the tensor reaches past its storage (", storage_bytes, " bytes)");
}

}  // namespace torch_archive
}  // namespace dcpp
