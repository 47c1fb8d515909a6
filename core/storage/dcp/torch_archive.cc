// Reading torch.save archives: the tensor of a DCP tensor item (ReadTensorItem), the Python
// object of a bytes item (DecodeObject), and the globals its pickle names (UnsafeGlobals).
#include "core/storage/dcp/torch_archive.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "core/base/error.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_pickle_internal.h"
#include "core/storage/dcp/zip_internal.h"

namespace dcpp {
namespace torch_archive {
namespace {

using pickle::Value;
using pickle::ValuePtr;

// One item of a file seen through its first and last 4 KiB, read once: an archive's headers,
// data.pkl and directory are there unless the item is large and unusual, so parsing it costs
// two reads. Other ranges go to the file.
class CachedItem final : public FileSource {
 public:
  CachedItem(FileSource& src, uint64_t offset, uint64_t length) : src_(src) {
    const uint64_t file_size = src.Size();
    const uint64_t head = std::min<uint64_t>({length, kWindow, file_size > offset ? file_size - offset : 0});
    head_begin_ = offset;
    head_.resize(head);
    if (head > 0) src.ReadAt(offset, head_.data(), head);
    const uint64_t end = std::min(offset + length, file_size);
    const uint64_t tail = std::min<uint64_t>(end > offset ? end - offset : 0, kWindow);
    tail_begin_ = end - tail;
    if (tail_begin_ >= offset + head) {
      tail_.resize(tail);
      if (tail > 0) src.ReadAt(tail_begin_, tail_.data(), tail);
    } else {
      tail_begin_ = head_begin_;  // the head covers it
    }
  }
  void ReadAt(uint64_t offset, void* data, size_t length) override {
    if (Serve(head_, head_begin_, offset, data, length) || Serve(tail_, tail_begin_, offset, data, length)) return;
    src_.ReadAt(offset, data, length);
  }
  uint64_t Size() override { return src_.Size(); }

 private:
  static constexpr uint64_t kWindow = 4096;
  static bool Serve(const std::string& buf, uint64_t begin, uint64_t offset, void* data, size_t length) {
    if (buf.empty() || offset < begin || offset - begin > buf.size() || length > buf.size() - (offset - begin)) {
      return false;
    }
    std::memcpy(data, buf.data() + (offset - begin), length);
    return true;
  }
  FileSource& src_;
  uint64_t head_begin_ = 0, tail_begin_ = 0;
  std::string head_, tail_;
};

struct Archive {
  std::vector<ZipEntry> entries;
  std::string prefix;  // "archive/"
  const ZipEntry* Find(const std::string& suffix) const {
    for (const ZipEntry& e : entries) {
      if (e.name == prefix + suffix) return &e;
    }
    return nullptr;
  }
};

Archive OpenArchive(FileSource& src, uint64_t offset, uint64_t length, const std::string& where) {
  Archive a;
  a.entries = ReadZipDirectory(src, offset, length, where);
  for (const ZipEntry& e : a.entries) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      a.prefix = e.name.substr(0, slash + 1);
    }
  }
  DCPP_CHECK(!a.prefix.empty(), where, ": not a torch.save archive (no data.pkl)");
  return a;
}

std::string ReadEntry(FileSource& src, const ZipEntry& e) {
  std::string out(e.size, '\0');
  if (e.size > 0) src.ReadAt(e.data_offset, out.data(), e.size);
  return out;
}

// Text of a Python str that holds latin-1 code points, back to the bytes (what
// _codecs.encode(s, 'latin1') returns).
std::string Latin1(const std::string& utf8, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < utf8.size(); ++i) {
    const uint8_t c = static_cast<uint8_t>(utf8[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      DCPP_CHECK((c & 0xe0) == 0xc0 && c <= 0xc3 && i + 1 < utf8.size(), where,
                 ": _codecs.encode of text that is not latin-1");
      out.push_back(static_cast<char>(((c & 0x03) << 6) | (static_cast<uint8_t>(utf8[++i]) & 0x3f)));
    }
  }
  return out;
}

// Turns a decoded object tree into plain values (see DecodeObject).
ValuePtr Plain(const ValuePtr& v, FileSource& src, const Archive& a, const std::string& where,
               int depth) {
  DCPP_CHECK(depth < 200, where, ": object nested too deeply");
  if (!v) return v;
  switch (v->kind) {
    case Value::Kind::kTuple:
    case Value::Kind::kList:
    case Value::Kind::kSet: {
      auto out = std::make_shared<Value>(*v);
      for (ValuePtr& x : out->items) x = Plain(x, src, a, where, depth + 1);
      return out;
    }
    case Value::Kind::kDict: {
      auto out = std::make_shared<Value>(*v);
      for (auto& kv : out->dict) {
        kv.first = Plain(kv.first, src, a, where, depth + 1);
        kv.second = Plain(kv.second, src, a, where, depth + 1);
      }
      return out;
    }
    case Value::Kind::kObject:
      break;
    case Value::Kind::kGlobal:
      if (v->module == "torch") {  // a dtype
        DtypeFromName(v->name);
        return Value::Str("torch." + v->name);
      }
      throw Error(StrCat(where, ": the object holds the class ", v->module, ".", v->name));
    case Value::Kind::kPersistent:
      throw Error(StrCat(where, ": a storage outside a tensor"));
    default:
      return v;
  }
  const auto& args = v->args ? v->args->items : std::vector<ValuePtr>{};
  if (v->IsObjectOf("collections", "OrderedDict")) {
    std::vector<std::pair<ValuePtr, ValuePtr>> items;
    for (const auto& kv : v->dict) {
      items.push_back({Plain(kv.first, src, a, where, depth + 1), Plain(kv.second, src, a, where, depth + 1)});
    }
    return Value::Dict(std::move(items));
  }
  if (v->IsObjectOf("_codecs", "encode")) {
    DCPP_CHECK(args.size() == 2 && args[0]->Is(Value::Kind::kStr) && args[1]->Is(Value::Kind::kStr) &&
                   args[1]->str == "latin1",
               where, ": unexpected _codecs.encode call");
    return Value::Bytes(Latin1(args[0]->str, where));
  }
  if (v->IsObjectOf("torch", "Size")) {
    std::vector<ValuePtr> dims;
    for (int64_t x : IntTuple(v, where + ": torch.Size")) dims.push_back(Value::Int(x));
    return Value::Tuple(std::move(dims));
  }
  if (v->IsObjectOf("torch", "device")) {
    DCPP_CHECK(!args.empty(), where, ": torch.device without arguments");
    return Value::Str(args[0]->AsStr(where + ": device"));
  }
  if (v->IsObjectOf("builtins", "set") || v->IsObjectOf("builtins", "frozenset")) {
    auto out = std::make_shared<Value>();
    out->kind = Value::Kind::kSet;
    if (!args.empty()) {
      for (const ValuePtr& x : args[0]->AsSeq(where + ": set items")) out->items.push_back(Plain(x, src, a, where, depth + 1));
    }
    return out;
  }
  if (v->IsObjectOf("builtins", "bytearray")) {
    if (args.empty()) return Value::Bytes("");
    if (args[0]->Is(Value::Kind::kBytes)) return Value::Bytes(args[0]->str);
    DCPP_CHECK(args.size() == 2 && args[0]->Is(Value::Kind::kStr), where, ": unexpected bytearray call");
    return Value::Bytes(Latin1(args[0]->str, where));
  }
  if (IsRebuild(*v)) {
    const TensorRef t = ParseRebuild(*v, where);
    const ZipEntry* e = a.Find("data/" + t.key);
    DCPP_CHECK(e != nullptr, where, ": storage ", t.key, " is missing from the archive");
    const c10::ScalarType dtype = DtypeFromName(t.dtype);
    const int64_t es = ElementSize(dtype);
    CheckInside(t, es, e->size, where);
    std::string storage = ReadEntry(src, *e);
    const at::Tensor raw = at::from_blob(storage.data(), {static_cast<int64_t>(storage.size()) / es},
                                         at::TensorOptions().dtype(dtype));
    const at::Tensor dense = raw.as_strided(t.sizes, t.strides, t.storage_offset).contiguous();
    std::vector<ValuePtr> shape;
    for (int64_t s : t.sizes) shape.push_back(Value::Int(s));
    auto out = std::make_shared<Value>();
    out->kind = Value::Kind::kObject;
    out->cls = Value::Global("torch", "Tensor");
    out->args = Value::Tuple({});
    out->state = Value::Dict({
        {Value::Str("dtype"), Value::Str(t.dtype)},
        {Value::Str("shape"), Value::Tuple(std::move(shape))},
        {Value::Str("data"), Value::Bytes(std::string(static_cast<const char*>(dense.const_data_ptr()),
                                                      static_cast<size_t>(dense.numel() * es)))},
    });
    return out;
  }
  throw Error(StrCat(where, ": the object holds a ", v->cls ? v->cls->module + "." + v->cls->name : "?",
                     " call"));
}

}  // namespace

std::vector<std::string> UnsafeGlobals(const std::string& archive, const std::string& where) {
  MemorySource src(archive);
  const Archive a = OpenArchive(src, 0, archive.size(), where);
  std::vector<std::string> out;
  std::set<std::string> seen;
  // Accept every global so that decoding goes on past the first; record those not safe.
  pickle::Decode(ReadEntry(src, *a.Find("data.pkl")), [&](const std::string& module, const std::string& name) {
    if (!SafeGlobal(module, name) && seen.insert(module + "." + name).second) out.push_back(module + "." + name);
    return true;
  }, where);
  return out;
}

bool StoredTensor::contiguous() const {
  int64_t expect = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    if (sizes[d] != 1 && strides[d] != expect) return false;
    expect *= sizes[d];
  }
  return true;
}

int64_t StoredTensor::element_size() const { return ElementSize(DtypeFromName(dtype)); }

uint64_t StoredTensor::data_offset() const {
  return storage_file_offset + static_cast<uint64_t>(storage_offset * element_size());
}

StoredTensor ReadTensorItem(FileSource& file, uint64_t offset, uint64_t length, const std::string& where) {
  CachedItem src(file, offset, length);
  if (length >= 9) {
    // DCP's serialization_format=SAFETENSORS writes raw safetensors items instead.
    char head[9];
    src.ReadAt(offset, head, sizeof head);
    DCPP_CHECK(Get32(reinterpret_cast<const uint8_t*>(head)) == kLocalSig || head[8] != '{', where,
               ": the item is a safetensors blob (DCP's serialization_format=SAFETENSORS), "
               "which dcpp does not read; only torch.save items are");
  }
  const Archive a = OpenArchive(src, offset, length, where);
  const ZipEntry* pkl = a.Find("data.pkl");
  const ValuePtr v = pickle::Decode(ReadEntry(src, *pkl), TensorGlobal, where + " data.pkl");
  DCPP_CHECK(IsRebuild(*v), where, ": the item holds ", pickle::Repr(*v, 80), ", not a tensor");
  const TensorRef t = ParseRebuild(*v, where);
  const ZipEntry* e = a.Find("data/" + t.key);
  DCPP_CHECK(e != nullptr, where, ": storage ", t.key, " is missing from the archive");
  StoredTensor out;
  out.dtype = t.dtype;
  out.sizes = t.sizes;
  out.strides = t.strides;
  out.storage_offset = t.storage_offset;
  out.storage_file_offset = e->data_offset;
  out.storage_bytes = e->size;
  out.storage_crc32 = e->crc32;
  CheckInside(t, out.element_size(), e->size, where);
  return out;
}

bool IsTorchSaveArchive(const std::string& data) {
  if (data.size() < 22 || Get32(reinterpret_cast<const uint8_t*>(data.data())) != kLocalSig) return false;
  try {
    MemorySource src(data);
    OpenArchive(src, 0, data.size(), "blob");
    return true;
  } catch (const Error&) {
    return false;
  }
}

pickle::ValuePtr DecodeObject(const std::string& archive, const std::string& where) {
  MemorySource src(archive);
  const Archive a = OpenArchive(src, 0, archive.size(), where);
  const ValuePtr v = pickle::Decode(ReadEntry(src, *a.Find("data.pkl")), ObjectGlobal, where);
  return Plain(v, src, a, where, 0);
}

}  // namespace torch_archive
}  // namespace dcpp
