#include "core/storage/dcp/torch_archive.h"

#include <ATen/ATen.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "core/base/error.h"
#include "core/model/dtype.h"

namespace dcpp {
namespace torch_archive {
namespace {

using pickle::Value;
using pickle::ValuePtr;

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50;
constexpr uint32_t kEnd64LocatorSig = 0x07064b50;
constexpr uint32_t kDescriptorSig = 0x08074b50;
constexpr uint32_t kMax32 = 0xffffffffu;
constexpr uint16_t kFlags = 0x0808;  // sizes in a data descriptor; UTF-8 names (as torch.save)
constexpr uint64_t kAlignment = 64;  // torch.save aligns each entry's data to 64 bytes
constexpr char kArchiveName[] = "archive";

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t Get32(const uint8_t* p) { return Get16(p) | static_cast<uint32_t>(Get16(p + 2)) << 16; }
uint64_t Get64(const uint8_t* p) { return Get32(p) | static_cast<uint64_t>(Get32(p + 4)) << 32; }

void Put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& s, uint32_t v) {
  Put16(s, static_cast<uint16_t>(v & 0xffff));
  Put16(s, static_cast<uint16_t>(v >> 16));
}
void Put64(std::string& s, uint64_t v) {
  Put32(s, static_cast<uint32_t>(v & kMax32));
  Put32(s, static_cast<uint32_t>(v >> 32));
}

// Reads [begin, begin + n) of the archive, checking it lies inside it.
std::string ReadRange(FileSource& src, uint64_t archive, uint64_t length, uint64_t begin,
                      uint64_t n, const std::string& where, const char* what) {
  DCPP_CHECK(begin <= length && n <= length - begin, where, ": the zip archive is truncated (",
             what, " at byte ", begin, " of ", length, ")");
  std::string out(n, '\0');
  if (n > 0) src.ReadAt(archive + begin, out.data(), n);
  return out;
}

// A FileSource over bytes in memory (for archives already read).
class MemorySource final : public FileSource {
 public:
  explicit MemorySource(const std::string& data) : data_(data.data()), size_(data.size()) {}
  MemorySource(const void* data, size_t size) : data_(static_cast<const char*>(data)), size_(size) {}
  void ReadAt(uint64_t offset, void* out, size_t length) override {
    DCPP_CHECK(offset <= size_ && length <= size_ - offset, "read past the end of an archive in memory");
    if (length > 0) std::memcpy(out, data_ + offset, length);
  }
  uint64_t Size() override { return size_; }

 private:
  const char* data_;
  size_t size_;
};

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

// A tensor named by a rebuild call: its dtype, geometry and storage key.
struct TensorRef {
  std::string dtype;
  std::string key;
  int64_t storage_offset = 0;
  std::vector<int64_t> sizes, strides;
};

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

// Appends a local header for `name` whose data starts at a multiple of 64 (as torch.save).
void LocalHeader(std::string& out, uint64_t archive_pos, const std::string& name, bool zip64) {
  Put32(out, kLocalSig);
  Put16(out, zip64 ? 45 : 20);
  Put16(out, kFlags);
  Put16(out, 0);  // stored
  Put16(out, 0);  // time
  Put16(out, 0);  // date
  Put32(out, 0);  // crc: in the data descriptor
  Put32(out, zip64 ? kMax32 : 0);
  Put32(out, zip64 ? kMax32 : 0);
  Put16(out, static_cast<uint16_t>(name.size()));
  const uint64_t zip64_extra = zip64 ? 20 : 0;
  const uint64_t before = archive_pos + 30 + name.size() + zip64_extra;
  uint64_t pad = (kAlignment - (before + 4) % kAlignment) % kAlignment;
  Put16(out, static_cast<uint16_t>(zip64_extra + 4 + pad));
  out += name;
  if (zip64) {
    Put16(out, 0x0001);
    Put16(out, 16);
    Put64(out, 0);
    Put64(out, 0);
  }
  Put16(out, 0x4246);  // "FB": torch.save's padding field
  Put16(out, static_cast<uint16_t>(pad));
  out.append(pad, 'Z');
}

void Descriptor(std::string& out, uint32_t crc, uint64_t size, bool zip64) {
  Put32(out, kDescriptorSig);
  Put32(out, crc);
  if (zip64) {
    Put64(out, size);
    Put64(out, size);
  } else {
    Put32(out, static_cast<uint32_t>(size));
    Put32(out, static_cast<uint32_t>(size));
  }
}

// Appends a small entry (header, data, descriptor) at archive position out.size() + base.
void SmallEntry(std::string& out, uint64_t base, const std::string& name, const std::string& data,
                std::vector<ZipRecord>* records) {
  ZipRecord r{name, base + out.size(), data.size(), Crc32(data.data(), data.size())};
  LocalHeader(out, base + out.size(), name, false);
  out += data;
  Descriptor(out, r.crc, r.size, false);
  records->push_back(r);
}

// The central directory and end records for `records`, starting at archive position `base`.
std::string Directory(const std::vector<ZipRecord>& records, uint64_t base) {
  std::string out;
  bool any64 = false;
  for (const ZipRecord& r : records) {
    const bool big_size = r.size >= kMax32, big_offset = r.local_offset >= kMax32;
    std::string extra;
    if (big_size || big_offset) {
      std::string fields;
      if (big_size) {
        Put64(fields, r.size);
        Put64(fields, r.size);
      }
      if (big_offset) Put64(fields, r.local_offset);
      Put16(extra, 0x0001);
      Put16(extra, static_cast<uint16_t>(fields.size()));
      extra += fields;
      any64 = true;
    }
    Put32(out, kCentralSig);
    Put16(out, extra.empty() ? 20 : 45);  // made by
    Put16(out, extra.empty() ? 20 : 45);  // needed
    Put16(out, kFlags);
    Put16(out, 0);
    Put16(out, 0);
    Put16(out, 0);
    Put32(out, r.crc);
    Put32(out, big_size ? kMax32 : static_cast<uint32_t>(r.size));
    Put32(out, big_size ? kMax32 : static_cast<uint32_t>(r.size));
    Put16(out, static_cast<uint16_t>(r.name.size()));
    Put16(out, static_cast<uint16_t>(extra.size()));
    Put16(out, 0);  // comment
    Put16(out, 0);  // disk
    Put16(out, 0);  // internal attributes
    Put32(out, 0);  // external attributes
    Put32(out, big_offset ? kMax32 : static_cast<uint32_t>(r.local_offset));
    out += r.name;
    out += extra;
  }
  const uint64_t cd_size = out.size();
  const uint64_t end64 = base + out.size();
  if (any64 || base >= kMax32) {
    Put32(out, kEnd64Sig);
    Put64(out, 44);
    Put16(out, 45);
    Put16(out, 45);
    Put32(out, 0);
    Put32(out, 0);
    Put64(out, records.size());
    Put64(out, records.size());
    Put64(out, cd_size);
    Put64(out, base);
    Put32(out, kEnd64LocatorSig);
    Put32(out, 0);
    Put64(out, end64);
    Put32(out, 1);
  }
  Put32(out, kEndSig);
  Put16(out, 0);
  Put16(out, 0);
  Put16(out, static_cast<uint16_t>(records.size()));
  Put16(out, static_cast<uint16_t>(records.size()));
  Put32(out, cd_size >= kMax32 ? kMax32 : static_cast<uint32_t>(cd_size));
  Put32(out, base >= kMax32 ? kMax32 : static_cast<uint32_t>(base));
  Put16(out, 0);
  return out;
}

// The small entries torch.save writes before and after the data. The 40-digit serialization
// id is per archive in torch.save; torch.load only reads it, so any digits do.
const char kFormatVersion[] = "1";
const char kStorageAlignment[] = "64";
const char kByteOrder[] = "little";
const char kVersion[] = "3\n";
const char kSerializationId[] = "0000000000000000000000000000000000000000";

std::string Name(const char* entry) { return std::string(kArchiveName) + "/" + entry; }

// The entries before the storage: data.pkl and torch.save's format notes.
void LeadingEntries(std::string& out, const std::string& pkl, std::vector<ZipRecord>* records) {
  SmallEntry(out, 0, Name("data.pkl"), pkl, records);
  SmallEntry(out, 0, Name(".format_version"), kFormatVersion, records);
  SmallEntry(out, 0, Name(".storage_alignment"), kStorageAlignment, records);
  SmallEntry(out, 0, Name("byteorder"), kByteOrder, records);
}

// The entries after the storage, at archive position `base` + out.size().
void TrailingEntries(std::string& out, uint64_t base, std::vector<ZipRecord>* records) {
  SmallEntry(out, base, Name("version"), kVersion, records);
  SmallEntry(out, base, Name(".data/serialization_id"), kSerializationId, records);
}

std::string Hex32(uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

const uint8_t* Bytes(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// CheckZipStructure's work; appends to `problems`, throws for what stops the check.
void CheckStructure(FileSource& src, uint64_t offset, uint64_t length, const std::string& where,
                    std::vector<std::string>& problems) {
  auto problem = [&](const std::string& text) { problems.push_back(StrCat(where, ": ", text)); };
  DCPP_CHECK(length >= 22, where, ": item of ", length, " bytes is too short to be a zip archive");
  const std::string first = ReadRange(src, offset, length, 0, 4, where, "first local header");
  if (Get32(Bytes(first)) != kLocalSig) {
    problem("the archive does not begin with a zip local header (torch.load checks for one)");
  }
  // The end record: torch.save writes no archive comment, so it is the last 22 bytes.
  const std::string eocd = ReadRange(src, offset, length, length - 22, 22, where, "end record");
  const uint8_t* e = Bytes(eocd);
  DCPP_CHECK(Get32(e) == kEndSig, where, ": the zip end record is not in the last 22 bytes (found ",
             Hex32(Get32(e)), " where its signature belongs): the archive is corrupt");
  const uint16_t disk = Get16(e + 4), cd_disk = Get16(e + 6), on_disk = Get16(e + 8),
                 total = Get16(e + 10), comment = Get16(e + 20);
  uint64_t count = total, cd_size = Get32(e + 12), cd_offset = Get32(e + 16);
  if (disk != 0 || cd_disk != 0) {
    problem(StrCat("the zip end record names disk ", disk, " and directory disk ", cd_disk,
                   "; a torch.save archive is one disk (0)"));
  }
  if (on_disk != total) {
    problem(StrCat("the zip end record counts ", on_disk, " entries on this disk but ", total, " in all"));
  }
  if (comment != 0) {
    problem(StrCat("the zip end record announces a comment of ", comment, " bytes, but nothing follows it"));
  }
  uint64_t records = length - 22;  // where the central directory must end
  const bool deferred = total == 0xffff || cd_size == kMax32 || cd_offset == kMax32;
  std::string loc;
  if (length >= 42) loc = ReadRange(src, offset, length, length - 42, 20, where, "zip64 locator");
  if (!loc.empty() && Get32(Bytes(loc)) == kEnd64LocatorSig) {
    const uint8_t* l = Bytes(loc);
    const uint32_t loc_disk = Get32(l + 4), disks = Get32(l + 16);
    const uint64_t rec = Get64(l + 8);
    if (loc_disk != 0 || disks != 1) {
      problem(StrCat("the zip64 locator names disk ", loc_disk, " of ", disks, " disks; a torch.save archive is one disk"));
    }
    DCPP_CHECK(rec <= length - 42 && length - 42 - rec >= 56, where, ": the zip64 locator points at byte ",
               rec, ", where no zip64 end record fits (the locator is at byte ", length - 42, ")");
    const std::string z64 = ReadRange(src, offset, length, rec, 56, where, "zip64 end record");
    const uint8_t* z = Bytes(z64);
    DCPP_CHECK(Get32(z) == kEnd64Sig, where, ": the zip64 locator points at byte ", rec,
               ", which holds no zip64 end record");
    const uint64_t size = Get64(z + 4);
    if (rec + 12 + size != length - 42) {
      problem(StrCat("the zip64 end record at byte ", rec, " says it has ", size,
                     " bytes, but the locator follows at byte ", length - 42));
    }
    if (Get32(z + 16) != 0 || Get32(z + 20) != 0) problem("the zip64 end record names a disk other than 0");
    const uint64_t on_disk64 = Get64(z + 24), total64 = Get64(z + 32);
    if (on_disk64 != total64) {
      problem(StrCat("the zip64 end record counts ", on_disk64, " entries on this disk but ", total64, " in all"));
    }
    if (total != 0xffff && total != total64) {
      problem(StrCat("the zip end record counts ", total, " entries, the zip64 end record ", total64));
    }
    if (Get32(e + 12) != kMax32 && Get32(e + 12) != Get64(z + 40)) {
      problem(StrCat("the zip end record gives the directory ", Get32(e + 12), " bytes, the zip64 end record ",
                     Get64(z + 40)));
    }
    if (Get32(e + 16) != kMax32 && Get32(e + 16) != Get64(z + 48)) {
      problem(StrCat("the zip end record puts the directory at byte ", Get32(e + 16),
                     ", the zip64 end record at byte ", Get64(z + 48)));
    }
    count = total64;
    cd_size = Get64(z + 40);
    cd_offset = Get64(z + 48);
    records = rec;
  } else if (deferred) {
    problem("the zip end record defers to a zip64 end record, but there is no zip64 locator before it");
  }
  DCPP_CHECK(cd_offset <= records && cd_size == records - cd_offset, where, ": the central directory (",
             cd_size, " bytes at byte ", cd_offset, ") does not end where the end records begin (byte ",
             records, ")");
  DCPP_CHECK(count > 0 && count <= cd_size / 46, where, ": the end record counts ", count,
             " entries, which a central directory of ", cd_size, " bytes cannot hold");
  DCPP_CHECK(cd_size < (64u << 20), where, ": implausible zip central directory of ", cd_size, " bytes");
  const std::string cd = ReadRange(src, offset, length, cd_offset, cd_size, where, "central directory");
  const uint8_t* c = Bytes(cd);
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [local header, end of data) per entry
  std::vector<std::string> names;
  uint64_t pos = 0;
  for (uint64_t n = 0; n < count; ++n) {
    DCPP_CHECK(pos + 46 <= cd_size && Get32(c + pos) == kCentralSig, where,
               ": corrupt zip central directory (entry ", n, " of ", count, ")");
    const uint8_t* h = c + pos;
    const uint16_t flags = Get16(h + 8), method = Get16(h + 10), name_len = Get16(h + 28),
                   extra_len = Get16(h + 30), comment_len = Get16(h + 32), disk_start = Get16(h + 34);
    const uint32_t crc = Get32(h + 16);
    uint64_t csize = Get32(h + 20), usize = Get32(h + 24), local = Get32(h + 42);
    DCPP_CHECK(pos + 46 + name_len + extra_len + comment_len <= cd_size, where,
               ": corrupt zip central directory (entry ", n, " runs past its end)");
    const std::string name(reinterpret_cast<const char*>(h + 46), name_len);
    const std::string what = StrCat("entry ", name.empty() ? StrCat("#", n) : name);
    const uint8_t* x = h + 46 + name_len;
    for (uint64_t xp = 0; xp + 4 <= extra_len;) {
      const uint16_t id = Get16(x + xp), len = Get16(x + xp + 2);
      DCPP_CHECK(xp + 4 + len <= extra_len, where, ": corrupt zip extra field of ", what);
      if (id == 0x0001) {
        uint64_t q = xp + 4;
        for (uint64_t* field : {&usize, &csize, &local}) {
          if (*field != kMax32) continue;
          DCPP_CHECK(q + 8 <= xp + 4 + len, where, ": corrupt zip64 field of ", what);
          *field = Get64(x + q);
          q += 8;
        }
      }
      xp += 4 + len;
    }
    if (flags & 0x0001) problem(what + " is encrypted");
    if (method != 0 || csize != usize) problem(what + " is compressed; torch.save stores entries uncompressed");
    if (disk_start != 0) problem(StrCat(what, " starts on disk ", disk_start, "; a torch.save archive is one disk"));
    DCPP_CHECK(local <= cd_offset && cd_offset - local >= 30, where, ": the local header of ", what,
               " (byte ", local, ") is not before the central directory");
    const std::string lh = ReadRange(src, offset, length, local, 30, where, "local header");
    const uint8_t* l = Bytes(lh);
    DCPP_CHECK(Get32(l) == kLocalSig, where, ": no zip local header where the directory puts ", what,
               " (byte ", local, ")");
    const uint16_t l_flags = Get16(l + 6), l_method = Get16(l + 8), l_name_len = Get16(l + 26),
                   l_extra_len = Get16(l + 28);
    const std::string l_name = ReadRange(src, offset, length, local + 30, l_name_len, where, "local name");
    if (l_name != name) problem(StrCat(what, ": its local header names it '", l_name, "'"));
    if (l_method != method) problem(StrCat(what, ": its local header says method ", l_method, ", the directory ", method));
    if (!(l_flags & 0x0008)) {
      const uint32_t l_crc = Get32(l + 14), l_csize = Get32(l + 18), l_usize = Get32(l + 22);
      if (l_crc != crc) problem(StrCat(what, ": its local header records CRC-32 ", Hex32(l_crc), ", the directory ", Hex32(crc)));
      if ((l_usize != kMax32 && l_usize != usize) || (l_csize != kMax32 && l_csize != csize)) {
        problem(StrCat(what, ": its local header records ", l_usize, " bytes, the directory ", usize));
      }
    }
    const uint64_t data = local + 30 + l_name_len + l_extra_len;
    DCPP_CHECK(data <= cd_offset && usize <= cd_offset - data, where, ": ", what, " (", usize,
               " bytes at byte ", data, ") runs into the central directory (byte ", cd_offset, ")");
    uint64_t end = data + usize;
    if (l_flags & 0x0008) {  // a data descriptor follows: [signature] crc, sizes
      const uint64_t room = cd_offset - end;
      const std::string d = ReadRange(src, offset, length, end, std::min<uint64_t>(room, 8), where, "data descriptor");
      const bool sig = d.size() >= 4 && Get32(Bytes(d)) == kDescriptorSig;
      const size_t at = sig ? 4 : 0;
      if (d.size() < at + 4) {
        problem(what + ": its data descriptor is missing");
      } else if (Get32(Bytes(d) + at) != crc) {
        problem(StrCat(what, ": its data descriptor records CRC-32 ", Hex32(Get32(Bytes(d) + at)),
                       ", the directory ", Hex32(crc)));
      }
      end += std::min<uint64_t>(room, at + 4 + (usize >= kMax32 || csize >= kMax32 ? 16 : 8));
    }
    spans.emplace_back(local, end);
    names.push_back(name);
    pos += 46 + name_len + extra_len + comment_len;
  }
  if (pos != cd_size) {
    problem(StrCat("the central directory has ", cd_size - pos, " bytes after its ", count, " entries"));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) {
      problem(StrCat("two entries overlap (at bytes ", spans[i - 1].first, " and ", spans[i].first, ")"));
      break;
    }
  }
  // torch.load's own rules: every record under the first entry's top folder, a data.pkl and
  // a version record.
  const size_t slash = names[0].find('/');
  if (slash == std::string::npos) {
    problem(StrCat("the first entry '", names[0], "' is not in a folder (torch.load requires one)"));
    return;
  }
  const std::string prefix = names[0].substr(0, slash + 1);
  bool pkl = false, version = false;
  for (const std::string& name : names) {
    if (name.compare(0, prefix.size(), prefix) != 0) {
      problem(StrCat("entry ", name, " is outside the archive's folder ", prefix));
    }
    pkl |= name == prefix + "data.pkl";
    version |= name == prefix + "version" || name == prefix + ".data/version";
  }
  if (!pkl) problem(StrCat("the archive has no ", prefix, "data.pkl"));
  if (!version) problem(StrCat("the archive has no ", prefix, "version record (torch.load requires one)"));
}

}  // namespace

void CheckEntryCrcs(const void* data, size_t length, const std::string& where) {
  MemorySource src(data, length);
  for (const ZipEntry& e : ReadZipDirectory(src, 0, length, where)) {
    const uint32_t crc = Crc32(static_cast<const char*>(data) + e.data_offset, e.size);
    DCPP_CHECK(crc == e.crc32, where, ": entry ", e.name, " fails its CRC-32 (recorded ", Hex32(e.crc32),
               ", computed ", Hex32(crc), "): the data is corrupt");
  }
}

std::vector<std::string> CheckZipStructure(FileSource& src, uint64_t offset, uint64_t length,
                                           const std::string& where) {
  std::vector<std::string> problems;
  try {
    CheckStructure(src, offset, length, where, problems);
  } catch (const std::exception& e) {
    problems.push_back(ErrorMessage(e));
  }
  return problems;
}

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

uint32_t Crc32(const void* data, size_t length, uint32_t crc) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (length > 0) {
    const uInt n = static_cast<uInt>(std::min<size_t>(length, 1u << 30));
    c = ::crc32(c, p, n);
    p += n;
    length -= n;
  }
  return static_cast<uint32_t>(c);
}

uint32_t Crc32Combine(uint32_t a, uint32_t b, uint64_t length_b) {
  return static_cast<uint32_t>(::crc32_combine64(a, b, static_cast<z_off64_t>(length_b)));
}

std::vector<ZipEntry> ReadZipDirectory(FileSource& src, uint64_t offset, uint64_t length,
                                       const std::string& where) {
  DCPP_CHECK(length >= 22, where, ": item of ", length, " bytes is too short to be a zip archive");
  // The end record is the last 22 bytes unless the archive has a comment (torch writes none).
  // Look in the last 4 KiB first (which usually holds the whole directory), then in the
  // most a comment allows.
  std::string tail;
  const uint8_t* t = nullptr;
  int64_t end = -1;
  for (uint64_t want : {uint64_t{4096}, uint64_t{22 + 65535 + 20}}) {
    const uint64_t tail_len = std::min<uint64_t>(length, want);
    tail = ReadRange(src, offset, length, length - tail_len, tail_len, where, "end record");
    t = reinterpret_cast<const uint8_t*>(tail.data());
    for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i) {
      if (Get32(t + i) == kEndSig) {
        end = i;
        break;
      }
    }
    if (end >= 0 || tail_len == length) break;
  }
  DCPP_CHECK(end >= 0, where, ": not a zip archive (no end record); the item is corrupt or not ",
             "written by torch.save");
  uint64_t count = Get16(t + end + 10);
  uint64_t cd_size = Get32(t + end + 12);
  uint64_t cd_offset = Get32(t + end + 16);
  if ((count == 0xffff || cd_size == kMax32 || cd_offset == kMax32) && end >= 20 &&
      Get32(t + end - 20) == kEnd64LocatorSig) {
    const uint64_t rec = Get64(t + end - 20 + 8);
    const std::string e64 = ReadRange(src, offset, length, rec, 56, where, "zip64 end record");
    const auto* z = reinterpret_cast<const uint8_t*>(e64.data());
    DCPP_CHECK(Get32(z) == kEnd64Sig, where, ": corrupt zip64 end record");
    count = Get64(z + 32);
    cd_size = Get64(z + 40);
    cd_offset = Get64(z + 48);
  }
  DCPP_CHECK(count < (1u << 20) && cd_size < (64u << 20), where, ": implausible zip directory (",
             count, " entries)");
  const std::string cd = ReadRange(src, offset, length, cd_offset, cd_size, where, "central directory");
  const auto* c = reinterpret_cast<const uint8_t*>(cd.data());
  std::vector<ZipEntry> out;
  uint64_t pos = 0;
  for (uint64_t n = 0; n < count; ++n) {
    DCPP_CHECK(pos + 46 <= cd_size && Get32(c + pos) == kCentralSig, where,
               ": corrupt zip central directory (entry ", n, ")");
    const uint16_t method = Get16(c + pos + 10);
    ZipEntry e;
    e.crc32 = Get32(c + pos + 16);
    uint64_t csize = Get32(c + pos + 20);
    e.size = Get32(c + pos + 24);
    const uint16_t name_len = Get16(c + pos + 28), extra_len = Get16(c + pos + 30),
                   comment_len = Get16(c + pos + 32);
    uint64_t local = Get32(c + pos + 42);
    DCPP_CHECK(pos + 46 + name_len + extra_len + comment_len <= cd_size, where,
               ": corrupt zip central directory (entry ", n, ")");
    e.name.assign(reinterpret_cast<const char*>(c + pos + 46), name_len);
    // zip64 extra field: the 32-bit fields that are 0xffffffff, in order.
    const uint8_t* x = c + pos + 46 + name_len;
    for (uint64_t xp = 0; xp + 4 <= extra_len;) {
      const uint16_t id = Get16(x + xp), len = Get16(x + xp + 2);
      DCPP_CHECK(xp + 4 + len <= extra_len, where, ": corrupt zip extra field of ", e.name);
      if (id == 0x0001) {
        uint64_t q = xp + 4;
        auto next = [&](uint64_t* field) {
          if (*field != kMax32) return;
          DCPP_CHECK(q + 8 <= xp + 4 + len, where, ": corrupt zip64 field of ", e.name);
          *field = Get64(x + q);
          q += 8;
        };
        next(&e.size);
        next(&csize);
        next(&local);
      }
      xp += 4 + len;
    }
    DCPP_CHECK(method == 0 && csize == e.size, where, ": entry ", e.name,
               " is compressed; torch.save stores entries uncompressed");
    const std::string lh = ReadRange(src, offset, length, local, 30, where, "local header");
    const auto* l = reinterpret_cast<const uint8_t*>(lh.data());
    DCPP_CHECK(Get32(l) == kLocalSig, where, ": corrupt zip local header of ", e.name);
    const uint64_t data = local + 30 + Get16(l + 26) + Get16(l + 28);
    DCPP_CHECK(data <= length && e.size <= length - data, where, ": entry ", e.name,
               " reaches past the end of the item (", length, " bytes): truncated");
    e.data_offset = offset + data;
    out.push_back(std::move(e));
    pos += 46 + name_len + extra_len + comment_len;
  }
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

std::string EncodeObject(const pickle::Value& v) {
  pickle::Writer w(3);
  w.Put(v);
  const std::string pkl = w.Finish();
  std::string out;
  std::vector<ZipRecord> records;
  LeadingEntries(out, pkl, &records);
  TrailingEntries(out, 0, &records);
  out += Directory(records, out.size());
  return out;
}

TensorArchive::TensorArchive(const std::string& dtype, const std::vector<int64_t>& sizes, uint64_t nbytes)
    : nbytes_(nbytes) {
  const int64_t es = ElementSize(DtypeFromName(dtype));
  pickle::Writer w(2);
  const char* storage_class = StorageClass(dtype);
  w.Global("torch._utils", storage_class ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
  w.Mark();
  w.Mark().Str("storage");
  if (storage_class) {
    w.Global("torch", storage_class);
  } else {
    w.Global("torch.storage", "UntypedStorage");
  }
  // Typed storages count elements, the untyped one bytes.
  w.Str("0").Str("cpu").Int(static_cast<int64_t>(storage_class ? nbytes / static_cast<uint64_t>(es) : nbytes));
  w.Tuple().BinPersId();
  w.Int(0);
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= std::max<int64_t>(sizes[d], 1);
  }
  w.Mark();
  for (int64_t s : sizes) w.Int(s);
  w.Tuple();
  w.Mark();
  for (int64_t s : strides) w.Int(s);
  w.Tuple();
  w.Bool(false);
  w.Global("collections", "OrderedDict").Tuple(0).Reduce();
  if (!storage_class) w.Global("torch", dtype);
  w.Tuple().Reduce();
  LeadingEntries(prefix_, w.Finish(), &records_);
  records_.push_back({Name("data/0"), prefix_.size(), nbytes, 0});
  LocalHeader(prefix_, prefix_.size(), records_.back().name, nbytes >= kMax32);
  suffix_size_ = suffix(0).size();
}

std::string TensorArchive::suffix(uint32_t data_crc32) const {
  std::vector<ZipRecord> records = records_;
  records.back().crc = data_crc32;
  std::string out;
  Descriptor(out, data_crc32, nbytes_, nbytes_ >= kMax32);
  const uint64_t base = prefix_.size() + nbytes_;
  TrailingEntries(out, base, &records);
  out += Directory(records, base + out.size());
  return out;
}

}  // namespace torch_archive
}  // namespace dcpp
