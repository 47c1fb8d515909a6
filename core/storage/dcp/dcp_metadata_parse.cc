// DCP's .metadata pickle decoded and checked: the globals it may name, its size and dtype
// fields, and its storage index (see dcp_internal.h).
#include "core/storage/dcp/dcp_internal.h"

#include <set>

#include "core/base/error.h"
#include "core/format/file_names.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/zstd_stream.h"

namespace dcpp {
namespace {

using pickle::Value;
using pickle::ValuePtr;

// The globals DCP's .metadata may name; anything else is refused by the decoder.
bool MetadataGlobal(const std::string& module, const std::string& name) {
  static const std::set<std::pair<std::string, std::string>> kAllowed = {
      {kMd, "Metadata"},
      {kMd, "TensorStorageMetadata"},
      {kMd, "BytesStorageMetadata"},
      {kMd, "ChunkStorageMetadata"},
      {kMd, "TensorProperties"},
      {kMd, "MetadataIndex"},
      {kMd, "StorageMeta"},
      {kMd, "_MEM_FORMAT_ENCODING"},
      {kOldMd, "TensorProperties"},
      {kOldMd, "MEM_FORMAT_ENCODING"},
      {kFs, "_StorageInfo"},
      {"torch", "Size"},
      {"torch", "strided"},
      {"torch", "sparse_coo"},
      {"torch.serialization", "_get_layout"},
      {"collections", "OrderedDict"},
      {"pathlib", "PosixPath"},
      {"pathlib", "WindowsPath"},
      {"pathlib", "PurePosixPath"},
      {"pathlib", "PureWindowsPath"},
      {"pathlib", "Path"},
      {"pathlib._local", "PosixPath"},
      {"pathlib._local", "WindowsPath"},
      {"pathlib._local", "PurePosixPath"},
      {"pathlib._local", "PureWindowsPath"},
      {"pathlib._local", "Path"},
  };
  if (kAllowed.count({module, name})) return true;
  return module == "torch" && IsDtypeName(name);  // dtypes: torch.float32, ...
}

}  // namespace

std::vector<int64_t> SizeOf(const ValuePtr& v, const std::string& what) {
  DCPP_CHECK(v != nullptr, what, " is missing");
  ValuePtr seq = v;
  if (v->IsObjectOf("torch", "Size")) {
    DCPP_CHECK(v->args && v->args->items.size() == 1, what, ": malformed torch.Size");
    seq = v->args->items[0];
  }
  std::vector<int64_t> out;
  for (const ValuePtr& x : seq->AsSeq(what)) out.push_back(x->AsInt(what));
  return out;
}

std::string DtypeOf(const Value& props, const std::string& what) {
  DCPP_CHECK(props.IsObjectOf(kMd, "TensorProperties") || props.IsObjectOf(kOldMd, "TensorProperties"),
             what, ": properties are ", pickle::Repr(props, 80), ", not TensorProperties");
  ValuePtr dtype;
  if (props.state && props.state->Is(Value::Kind::kTuple)) {  // __getstate__'s tuple
    DCPP_CHECK(!props.state->items.empty(), what, ": empty TensorProperties state");
    dtype = props.state->items[0];
  } else {
    dtype = props.Attr("dtype");
  }
  DCPP_CHECK(dtype && dtype->Is(Value::Kind::kGlobal) && dtype->module == "torch", what,
             ": dtype is ", dtype ? pickle::Repr(*dtype, 80) : "missing", ", not a torch dtype");
  DtypeFromName(dtype->name);
  return dtype->name;
}

std::string StorageInfo::View() const {
  return zstd ? StrCat(file, kZstd, offset, "+", length) : file;
}

Parsed Parse(const std::string& bytes, const std::string& where) {
  Parsed p;
  p.root = pickle::Decode(bytes, MetadataGlobal, where);
  const Value& md = *p.root;
  DCPP_CHECK(md.IsObjectOf(kMd, "Metadata"), where, ": the pickle holds ", pickle::Repr(md, 80),
             ", not DCP's Metadata");
  const ValuePtr version = md.Attr("version");
  if (version && !version->Is(Value::Kind::kNone)) {
    const std::string& v = version->AsStr(where + ": version");
    DCPP_CHECK(v.rfind("1.", 0) == 0, where, ": DCP metadata version '", v,
               "' is unknown; this dcpp reads version 1.x (and the unversioned metadata of PyTorch "
               "2.3)");
  }
  const ValuePtr storage = md.Attr("storage_data");
  DCPP_CHECK(storage && storage->Is(Value::Kind::kDict), where,
             ": storage_data is missing (not written by DCP's FileSystemWriter?)");
  for (const auto& [k, v] : storage->dict) {
    DCPP_CHECK(k->IsObjectOf(kMd, "MetadataIndex"), where, ": storage_data key ",
               pickle::Repr(*k, 80), " is not a MetadataIndex");
    const ValuePtr fqn = k->Attr("fqn");
    DCPP_CHECK(fqn != nullptr, where, ": MetadataIndex without fqn");
    IndexKey key{fqn->AsStr(where + ": MetadataIndex.fqn"), {}};
    const ValuePtr off = k->Attr("offset");
    if (off && !off->Is(Value::Kind::kNone)) key.second = SizeOf(off, where + ": MetadataIndex.offset");
    const std::string what = StrCat(where, ": storage of key '", key.first, "'");
    DCPP_CHECK(v->IsObjectOf(kFs, "_StorageInfo"), what, " is ", pickle::Repr(*v, 80),
               ", not a _StorageInfo");
    const ValuePtr path = v->Attr("relative_path"), offset = v->Attr("offset"), length = v->Attr("length");
    DCPP_CHECK(path && offset && length, what, ": incomplete _StorageInfo");
    StorageInfo info;
    info.file = path->AsStr(what + ": relative_path");
    DCPP_CHECK(IsPlainFileName(info.file) && info.file.find(kStrided) == std::string::npos &&
                   info.file.find(kZstd) == std::string::npos,
               what, " names file '",
               info.file, "', which is not a plain file name inside the checkpoint folder");
    const ValuePtr transforms = v->Attr("transform_descriptors");
    if (transforms && !transforms->Is(Value::Kind::kNone)) {
      // PyTorch's descriptors are "name[@domain]/version"; dcpp reads zstd, version 1.x.
      for (const ValuePtr& t : transforms->AsSeq(what + ": transform_descriptors")) {
        const std::string d = t->AsStr(what + ": transform descriptor");
        const bool zstd = d.rfind("stream.zstd/1", 0) == 0 && (d.size() == 13 || d[13] == '.');
        DCPP_CHECK(zstd && !info.zstd, what, " uses stream transforms ", pickle::Repr(*transforms, 120),
                   ": dcpp reads one '", kZstdDescriptor, "' (PyTorch's ZStandard extension) and no other");
        info.zstd = true;
      }
    }
    const int64_t o = offset->AsInt(what), l = length->AsInt(what);
    DCPP_CHECK(o >= 0 && l >= 0, what, ": negative offset or length");
    info.offset = static_cast<uint64_t>(o);
    info.length = static_cast<uint64_t>(l);
    p.storage[key] = info;
  }
  return p;
}

}  // namespace dcpp
