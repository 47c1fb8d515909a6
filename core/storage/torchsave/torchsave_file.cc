// Reads the zip directory and the data.pkl of a torch.save file, and walks the decoded object
// down to its tensors.
#include "core/storage/torchsave/torchsave_file.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include <ATen/ATen.h>

#include "core/base/error.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/dcp/torch_pickle_internal.h"

namespace dcpp {
namespace torchsave {
namespace {

using pickle::Value;
using pickle::ValuePtr;

// torch.save's magic number (0x1950a86a20f9469cfc6c) as the legacy format pickles it first,
// after PROTO n: LONG1 of 10 bytes, little-endian.
constexpr unsigned char kLegacyMagic[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr unsigned char kZipMagic[] = {'P', 'K', 0x03, 0x04};

bool IsLegacy(const std::string& head) {
  return head.size() >= 2 + sizeof kLegacyMagic && static_cast<unsigned char>(head[0]) == 0x80 &&
         std::memcmp(head.data() + 2, kLegacyMagic, sizeof kLegacyMagic) == 0;
}

// A dict, or an OrderedDict (REDUCE + SETITEMS), as its items; null for anything else.
const std::vector<std::pair<ValuePtr, ValuePtr>>* DictItems(const Value& v) {
  if (v.Is(Value::Kind::kDict) || v.IsObjectOf("collections", "OrderedDict")) return &v.dict;
  return nullptr;
}

// True when `v` holds a tensor anywhere in it.
bool HoldsTensor(const Value& v, int depth) {
  if (depth > 100) return false;
  if (torch_archive::IsRebuild(v)) return true;
  for (const ValuePtr& x : v.items) {
    if (x && HoldsTensor(*x, depth + 1)) return true;
  }
  for (const auto& [k, x] : v.dict) {
    if (x && HoldsTensor(*x, depth + 1)) return true;
  }
  return false;
}

struct Walker {
  const std::string& where;
  const std::map<std::string, torch_archive::ZipEntry>& storages;  // by storage key
  SavedFile out;
  std::set<std::string> seen;

  // `v` as a plain value EncodeObject writes (an OrderedDict as a dict); anything else is
  // refused naming the key.
  ValuePtr Plain(const ValuePtr& v, const std::string& fqn, int depth) {
    DCPP_CHECK(depth < 100, where, ": key '", fqn, "' is nested more than 100 deep");
    switch (v->kind) {
      case Value::Kind::kTuple:
      case Value::Kind::kList:
      case Value::Kind::kSet: {
        auto c = std::make_shared<Value>(*v);
        for (ValuePtr& x : c->items) x = Plain(x, fqn, depth + 1);
        return c;
      }
      case Value::Kind::kObject:
        if (!v->IsObjectOf("collections", "OrderedDict")) return PlainCall(v, fqn, depth);
        [[fallthrough]];
      case Value::Kind::kDict: {
        std::vector<std::pair<ValuePtr, ValuePtr>> kv;
        for (const auto& [k, x] : v->dict) kv.emplace_back(Plain(k, fqn, depth + 1), Plain(x, fqn, depth + 1));
        return Value::Dict(std::move(kv));
      }
      case Value::Kind::kGlobal:
      case Value::Kind::kPersistent:
        throw Error(StrCat(where, ": key '", fqn, "' holds ", pickle::Repr(*v, 80),
                           ", which is neither a tensor nor a plain value"));
      default:
        return v;
    }
  }

  // The plain value a call ObjectGlobal allows stands for: bytes (_codecs.encode, as protocol
  // 2 pickles them; bytearray), a set, torch.Size (a tuple), torch.device (its text).
  ValuePtr PlainCall(const ValuePtr& v, const std::string& fqn, int depth) {
    const std::vector<ValuePtr> none;
    const auto& args = v->args ? v->args->items : none;
    const bool text = !args.empty() && args[0]->Is(Value::Kind::kStr);
    if (v->IsObjectOf("_codecs", "encode") && text && args.size() == 2 && args[1]->Is(Value::Kind::kStr) &&
        args[1]->str == "latin1") {
      return Value::Bytes(Latin1(args[0]->str, fqn));
    }
    if (v->IsObjectOf("builtins", "bytearray") && (args.empty() || args[0]->Is(Value::Kind::kBytes))) {
      return Value::Bytes(args.empty() ? "" : args[0]->str);
    }
    if (v->IsObjectOf("builtins", "bytearray") && text && args.size() == 2) {
      return Value::Bytes(Latin1(args[0]->str, fqn));
    }
    if (v->IsObjectOf("builtins", "set") || v->IsObjectOf("builtins", "frozenset")) {
      auto out = std::make_shared<Value>();
      out->kind = Value::Kind::kSet;
      if (!args.empty()) {
        for (const ValuePtr& x : args[0]->AsSeq(where + ": key '" + fqn + "'")) out->items.push_back(Plain(x, fqn, depth + 1));
      }
      return out;
    }
    if (v->IsObjectOf("torch", "Size")) {
      std::vector<ValuePtr> dims;
      for (int64_t x : torch_archive::IntTuple(v, where + ": key '" + fqn + "'")) dims.push_back(Value::Int(x));
      return Value::Tuple(std::move(dims));
    }
    if (v->IsObjectOf("torch", "device") && text) return Value::Str(args[0]->str);
    throw Error(StrCat(where, ": key '", fqn, "' holds ", pickle::Repr(*v, 80),
                       ", which is neither a tensor nor a plain value"));
  }

  // A Python str of latin-1 code points (what _codecs.encode(s, 'latin1') turns into bytes).
  std::string Latin1(const std::string& utf8, const std::string& fqn) {
    std::string out;
    for (size_t i = 0; i < utf8.size(); ++i) {
      const uint8_t c = static_cast<uint8_t>(utf8[i]);
      if (c < 0x80) {
        out.push_back(static_cast<char>(c));
        continue;
      }
      DCPP_CHECK((c & 0xe0) == 0xc0 && c <= 0xc3 && i + 1 < utf8.size(), where, ": key '", fqn,
                 "': _codecs.encode of text that is not latin-1");
      out.push_back(static_cast<char>(((c & 0x03) << 6) | (static_cast<uint8_t>(utf8[++i]) & 0x3f)));
    }
    return out;
  }

  void Object(const ValuePtr& v, const std::string& fqn) {
    DCPP_CHECK(seen.insert(fqn).second, where, ": key '", fqn, "' is given twice");
    std::string archive;
    try {
      archive = torch_archive::EncodeObject(*Plain(v, fqn, 0));
    } catch (const Error& e) {
      if (std::string(e.what()).find(where) == 0) throw;
      throw Error(StrCat(where, ": key '", fqn, "' holds ", pickle::Repr(*v, 80), ", which dcpp cannot keep: ",
                         e.what()));
    }
    out.objects.push_back({fqn, std::move(archive)});
  }

  void Tensor(const Value& call, const std::string& fqn) {
    const torch_archive::TensorRef r = torch_archive::ParseRebuild(call, StrCat(where, ": key '", fqn, "'"));
    auto it = storages.find(r.key);
    DCPP_CHECK(it != storages.end(), where, ": key '", fqn, "' names storage ", r.key,
               ", which is missing from the archive (data/", r.key, ")");
    SavedTensor t;
    t.fqn = fqn;
    t.dtype = r.dtype;
    t.sizes = r.sizes;
    t.strides = r.strides;
    t.storage_offset = r.storage_offset;
    t.storage = r.key;
    t.storage_file_offset = it->second.data_offset;
    t.storage_bytes = it->second.size;
    t.storage_crc32 = it->second.crc32;
    t.element_size = ElementSize(DtypeFromName(r.dtype));
    // Sizes, strides and offset whose products overflow int64 cannot lie inside any file.
    int64_t numel = t.element_size, reach = r.storage_offset, step = 0;
    bool overflow = r.sizes.size() != r.strides.size();
    for (size_t d = 0; d < r.sizes.size() && !overflow; ++d) {
      overflow = r.sizes[d] < 0 || r.strides[d] < 0 || __builtin_mul_overflow(numel, r.sizes[d], &numel) ||
                 (r.sizes[d] > 0 && (__builtin_mul_overflow(r.sizes[d] - 1, r.strides[d], &step) ||
                                     __builtin_add_overflow(reach, step, &reach)));
    }
    overflow = overflow || __builtin_add_overflow(reach, 1, &reach) ||
               __builtin_mul_overflow(reach, t.element_size, &reach);
    DCPP_CHECK(!overflow, where, ": key '", fqn, "' has sizes, strides or a storage offset out of range");
    torch_archive::CheckInside(r, t.element_size, t.storage_bytes, StrCat(where, ": key '", fqn, "'"));
    DCPP_CHECK(seen.insert(fqn).second, where, ": key '", fqn, "' is given twice");
    out.tensors.push_back(std::move(t));
  }

  void Walk(const ValuePtr& v, const std::string& fqn, int depth) {
    DCPP_CHECK(depth < 100, where, ": key '", fqn, "' is nested more than 100 dicts deep");
    if (torch_archive::IsRebuild(*v)) return Tensor(*v, fqn);
    if ((v->Is(Value::Kind::kList) || v->Is(Value::Kind::kTuple)) && HoldsTensor(*v, 0)) {
      for (size_t i = 0; i < v->items.size(); ++i) Walk(v->items[i], StrCat(fqn, ".", i), depth + 1);
      return;
    }
    const auto* items = DictItems(*v);
    if (items == nullptr) return Object(v, fqn);
    for (const auto& [k, x] : *items) {
      std::string name;
      if (k->Is(Value::Kind::kStr)) {
        name = k->str;
      } else {
        DCPP_CHECK(k->Is(Value::Kind::kInt), where, ": a key ", pickle::Repr(*k, 40),
                   (fqn.empty() ? "" : " under '" + fqn + "'"), " is neither text nor an integer");
        name = std::to_string(k->i);
      }
      Walk(x, depth == 0 ? name : fqn + "." + name, depth + 1);
    }
  }
};

}  // namespace

int64_t SavedTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

bool SavedTensor::contiguous() const {
  int64_t expect = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    if (sizes[d] != 1 && strides[d] != expect) return false;
    expect *= sizes[d];
  }
  return true;
}

bool LooksLikeTorchSave(const std::string& head) {
  return (head.size() >= 4 && std::memcmp(head.data(), kZipMagic, 4) == 0) || IsLegacy(head);
}

SavedFile ReadTorchSaveFile(FileSource& src, const std::string& where) {
  const uint64_t size = src.Size();
  std::string head(static_cast<size_t>(std::min<uint64_t>(size, 16)), '\0');
  if (!head.empty()) src.ReadAt(0, head.data(), head.size());
  DCPP_CHECK(!IsLegacy(head), where, " is in torch.save's legacy format (PyTorch before 1.6, or "
             "_use_new_zipfile_serialization=False), which dcpp does not read; load it in PyTorch and "
             "torch.save it again (the zip format)");
  DCPP_CHECK(head.size() >= 4 && std::memcmp(head.data(), kZipMagic, 4) == 0, where,
             " is not a torch.save file (no zip archive at its start; truncated or another format)");
  const std::vector<torch_archive::ZipEntry> entries = torch_archive::ReadZipDirectory(src, 0, size, where);
  // Every entry lies under one folder, named as the file was ("archive/", "pytorch_model/").
  std::string prefix;
  for (const torch_archive::ZipEntry& e : entries) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      prefix = e.name.substr(0, slash + 1);
    }
  }
  DCPP_CHECK(!prefix.empty(), where, " is a zip archive but not a torch.save file (no data.pkl)");
  std::map<std::string, torch_archive::ZipEntry> storages;
  const torch_archive::ZipEntry* pkl = nullptr;
  for (const torch_archive::ZipEntry& e : entries) {
    if (e.name == prefix + "data.pkl") pkl = &e;
    if (e.name.compare(0, prefix.size() + 5, prefix + "data/") == 0) storages[e.name.substr(prefix.size() + 5)] = e;
  }
  std::string bytes(static_cast<size_t>(pkl->size), '\0');
  if (!bytes.empty()) src.ReadAt(pkl->data_offset, bytes.data(), bytes.size());
  const ValuePtr root = pickle::Decode(bytes, torch_archive::ObjectGlobal, where + " (data.pkl)");
  DCPP_CHECK(DictItems(*root) != nullptr, where, " holds ", pickle::Repr(*root, 80),
             ", not a dict of tensors (a state dict)");
  Walker w{where, storages, {}, {}};
  w.Walk(root, "", 0);
  return std::move(w.out);
}

std::string GatherTensor(FileSource& src, const SavedTensor& t, const std::string& where) {
  if (t.contiguous()) {
    std::string out(t.nbytes(), '\0');
    if (!out.empty()) src.ReadAt(t.data_offset(), out.data(), out.size());
    return out;
  }
  // Only the span the view reaches is read: [first element, last element].
  int64_t last = 0;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] > 0) last += (t.sizes[d] - 1) * t.strides[d];
  }
  if (t.numel() == 0) return "";
  const int64_t es = t.element_size;
  std::string span(static_cast<size_t>((last + 1) * es), '\0');
  src.ReadAt(t.data_offset(), span.data(), span.size());
  // Reorder as bytes: each element is `es` bytes, a trailing dimension of the view.
  const at::Tensor raw = at::from_blob(span.data(), {static_cast<int64_t>(span.size())}, at::kByte);
  std::vector<int64_t> sizes = t.sizes, strides;
  for (int64_t s : t.strides) strides.push_back(s * es);
  sizes.push_back(es);
  strides.push_back(1);
  const at::Tensor dense = raw.as_strided(sizes, strides, 0).contiguous();
  DCPP_CHECK(static_cast<uint64_t>(dense.numel()) == t.nbytes(), where, ": key '", t.fqn, "' gathers ",
             dense.numel(), " bytes, not ", t.nbytes());
  return std::string(static_cast<const char*>(dense.const_data_ptr()), static_cast<size_t>(dense.numel()));
}

}  // namespace torchsave
}  // namespace dcpp
