// torch.save files built by hand for the torchsave tests: a data.pkl written by the pickle
// Writer (protocol 2, as torch.save) and one zip entry per storage, laid out as torch.save
// lays them out. Lets tests write what PyTorch would not (hostile globals, broken archives).
#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/dcp/zip_internal.h"

namespace dcpp {
namespace torchsave_testing {

using pickle::Value;
using pickle::ValuePtr;

inline ValuePtr Call(const std::string& module, const std::string& name, std::vector<ValuePtr> args) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::kObject;
  v->cls = Value::Global(module, name);
  v->args = Value::Tuple(std::move(args));
  return v;
}

inline ValuePtr Ints(const std::vector<int64_t>& v) {
  std::vector<ValuePtr> items;
  for (int64_t x : v) items.push_back(Value::Int(x));
  return Value::Tuple(std::move(items));
}

// torch._utils._rebuild_tensor_v2 of storage `key` (a torch.<storage_class>, `numel` elements).
inline ValuePtr Tensor(const std::string& key, const std::string& storage_class, int64_t numel, int64_t offset,
                       const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
  auto pid = std::make_shared<Value>();
  pid->kind = Value::Kind::kPersistent;
  pid->args = Value::Tuple({Value::Str("storage"), Value::Global("torch", storage_class), Value::Str(key),
                            Value::Str("cpu"), Value::Int(numel)});
  return Call("torch._utils", "_rebuild_tensor_v2",
              {pid, Value::Int(offset), Ints(sizes), Ints(strides), Value::Bool(false),
               Call("collections", "OrderedDict", {})});
}

// torch._utils._rebuild_tensor_v3 of untyped storage `key` (`nbytes` bytes) with `dtype`
// (a torch dtype name): what torch.save writes for dtypes without a typed storage class.
inline ValuePtr TensorV3(const std::string& key, int64_t nbytes, const std::string& dtype, int64_t offset,
                         const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
  auto pid = std::make_shared<Value>();
  pid->kind = Value::Kind::kPersistent;
  pid->args = Value::Tuple({Value::Str("storage"), Value::Global("torch", "UntypedStorage"), Value::Str(key),
                            Value::Str("cpu"), Value::Int(nbytes)});
  return Call("torch._utils", "_rebuild_tensor_v3",
              {pid, Value::Int(offset), Ints(sizes), Ints(strides), Value::Bool(false),
               Call("collections", "OrderedDict", {}), Value::Global("torch", dtype)});
}

inline ValuePtr Dict(std::vector<std::pair<std::string, ValuePtr>> items) {
  std::vector<std::pair<ValuePtr, ValuePtr>> kv;
  for (auto& [k, v] : items) kv.emplace_back(Value::Str(k), v);
  return Value::Dict(std::move(kv));
}

// The bytes of a torch.save file holding `root`, with `storages` (key -> bytes) as
// `<folder>/data/<key>`.
inline std::string Archive(const Value& root, const std::map<std::string, std::string>& storages,
                           const std::string& folder = "archive") {
  std::vector<torch_archive::ZipRecord> records;
  std::string out;
  torch_archive::SmallEntry(out, 0, folder + "/data.pkl", pickle::Writer(2).Put(root).Finish(), &records);
  torch_archive::SmallEntry(out, 0, folder + "/byteorder", "little", &records);
  for (const auto& [key, bytes] : storages) torch_archive::SmallEntry(out, 0, folder + "/data/" + key, bytes, &records);
  torch_archive::SmallEntry(out, 0, folder + "/version", "3\n", &records);
  out += torch_archive::Directory(records, out.size());
  return out;
}

// The bytes of `n` float32 values first, first + 1, ...
inline std::string Floats(int64_t n, float first) {
  std::string out(static_cast<size_t>(n) * 4, '\0');
  for (int64_t i = 0; i < n; ++i) {
    const float v = first + static_cast<float>(i);
    std::memcpy(&out[static_cast<size_t>(i) * 4], &v, 4);
  }
  return out;
}

}  // namespace torchsave_testing
}  // namespace dcpp
