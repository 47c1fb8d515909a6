// Reads each file's header through FileSystemReader, checks it against the file's size (and
// the index, if any), and describes the tensors as one native chunk each.
#include "core/storage/safetensors/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/format/metadata.pb.h"
#include "core/storage/registry.h"

namespace dcpp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The safetensors library refuses larger headers too.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
constexpr char kSuffix[] = ".safetensors";
constexpr char kIndexSuffix[] = ".safetensors.index.json";
constexpr char kPlannerPrefix[] = "safetensors.";

struct DtypeName {
  const char* safetensors;
  const char* dcpp;
  int64_t size;     // bytes per dcpp element
  int64_t per = 1;  // safetensors elements per dcpp element (F4: two 4-bit values a byte)
};

// Every safetensors dtype that dcpp stores. F6_* (no LibTorch dtype) and C128 (not in the
// format) have no counterpart; bits8 ... and complex32 none on safetensors' side. F4 counts
// 4-bit elements where LibTorch's float4_e2m1fn_x2 counts bytes, so its last dimension is
// twice dcpp's (safetensors' own torch binding writes it so).
constexpr DtypeName kDtypes[] = {
    {"BOOL", "bool", 1},           {"U8", "uint8", 1},
    {"I8", "int8", 1},             {"I16", "int16", 2},
    {"U16", "uint16", 2},          {"I32", "int32", 4},
    {"U32", "uint32", 4},          {"I64", "int64", 8},
    {"U64", "uint64", 8},          {"F16", "float16", 2},
    {"BF16", "bfloat16", 2},       {"F32", "float32", 4},
    {"F64", "float64", 8},         {"C64", "complex64", 8},
    {"F8_E4M3", "float8_e4m3fn", 1}, {"F8_E5M2", "float8_e5m2", 1},
    {"F8_E4M3FNUZ", "float8_e4m3fnuz", 1}, {"F8_E5M2FNUZ", "float8_e5m2fnuz", 1},
    {"F8_E8M0", "float8_e8m0fnu", 1},      {"F4", "float4_e2m1fn_x2", 1, 2},
};

const DtypeName* FindSafetensorsDtype(const std::string& name) {
  for (const DtypeName& d : kDtypes) {
    if (name == d.safetensors) return &d;
  }
  return nullptr;
}

std::string SupportedDtypes() {
  std::string s;
  for (const DtypeName& d : kDtypes) s += (s.empty() ? "" : " ") + std::string(d.safetensors);
  return s;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> ListFiles(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code type_ec;
    if (EndsWith(name, suffix) && e.is_regular_file(type_ec)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// One tensor of one file, as its header describes it.
struct Entry {
  std::string name;
  std::string dtype;  // dcpp name
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // in the data area
};

struct Header {
  uint64_t data_start = 0;  // 8 + N
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;  // __metadata__
};

// Reads and validates the header of `file` (a plain name in `reader`'s folder); `path` is for
// messages.
Header ReadHeader(FileSystemReader& reader, const std::string& file, const std::string& path) {
  std::unique_ptr<FileSource> src = reader.Open(file);
  const uint64_t size = src->Size();
  DCPP_CHECK(size >= 8, "safetensors file ", path, " is truncated: ", size,
             " bytes, less than the 8-byte header length");
  uint8_t len_bytes[8];
  src->ReadAt(0, len_bytes, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  DCPP_CHECK(n <= kMaxHeaderBytes, "safetensors file ", path, ": header length ", n,
             " is larger than the 100 MiB limit (not a safetensors file, or corrupt)");
  DCPP_CHECK(n <= size - 8, "safetensors file ", path, ": header length ", n,
             " goes beyond the end of the file (", size, " bytes; truncated or not a safetensors file)");
  std::string text(static_cast<size_t>(n), '\0');
  src->ReadAt(8, text.data(), text.size());
  DCPP_CHECK(!text.empty() && text[0] == '{', "safetensors file ", path,
             ": the header is not a JSON object");
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  DCPP_CHECK(!doc.is_discarded(), "safetensors file ", path, ": the header is not valid JSON");
  DCPP_CHECK(doc.is_object(), "safetensors file ", path, ": the header is not a JSON object");

  Header h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (const auto& [name, value] : doc.items()) {
    if (name == "__metadata__") {
      DCPP_CHECK(value.is_object(), "safetensors file ", path, ": __metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        DCPP_CHECK(v.is_string(), "safetensors file ", path, ": __metadata__ entry '", k,
                   "' is not a string");
        h.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = StrCat("safetensors file ", path, ": tensor '", name, "'");
    DCPP_CHECK(value.is_object(), what, " is not a JSON object");
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      DCPP_CHECK(value.contains(field), what, " has no ", field);
    }
    Entry e;
    e.name = name;
    const json& dtype = value["dtype"];
    DCPP_CHECK(dtype.is_string(), what, " has a dtype that is not a string");
    const DtypeName* d = FindSafetensorsDtype(dtype.get<std::string>());
    DCPP_CHECK(d != nullptr, what, " has dtype ", dtype.get<std::string>(),
               ", which dcpp does not support (it reads ", SupportedDtypes(), ")");
    e.dtype = d->dcpp;
    const json& shape = value["shape"];
    DCPP_CHECK(shape.is_array(), what, " has a shape that is not a list");
    int64_t numel = 1;
    for (const json& s : shape) {
      DCPP_CHECK(s.is_number_integer(), what, " has a shape ", shape.dump(), " that is not a list of integers");
      DCPP_CHECK(s.is_number_unsigned(), what, " has a negative size in its shape ", shape.dump());
      const uint64_t v = s.get<uint64_t>();
      DCPP_CHECK(v <= static_cast<uint64_t>(INT64_MAX) &&
                     !__builtin_mul_overflow(numel, static_cast<int64_t>(v), &numel),
                 what, " has a shape ", shape.dump(), " too large");
      e.shape.push_back(static_cast<int64_t>(v));
    }
    if (d->per > 1) {  // F4: pairs of 4-bit values make one dcpp element
      DCPP_CHECK(!e.shape.empty() && e.shape.back() % d->per == 0, what, " has ", d->safetensors,
                 " shape ", shape.dump(), " whose last dimension is not a multiple of ", d->per,
                 ", so its values do not fill whole bytes (dcpp reads them as ", d->dcpp, ")");
      e.shape.back() /= d->per;
      numel /= d->per;
    }
    int64_t nbytes = 0;
    DCPP_CHECK(!__builtin_mul_overflow(numel, d->size, &nbytes), what, " has a shape ", shape.dump(),
               " too large");
    const json& offs = value["data_offsets"];
    DCPP_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() &&
                   offs[1].is_number_unsigned(),
               what, " has data_offsets ", offs.dump(), "; expected [begin, end], non-negative integers");
    e.begin = offs[0].get<uint64_t>();
    e.end = offs[1].get<uint64_t>();
    DCPP_CHECK(e.begin <= e.end, what, " has data_offsets [", e.begin, ", ", e.end, "] that end before they begin");
    DCPP_CHECK(e.end - e.begin == static_cast<uint64_t>(nbytes), what, " has data_offsets [", e.begin,
               ", ", e.end, "] (", e.end - e.begin, " bytes) but its ", d->safetensors, " shape ",
               shape.dump(), " needs ", nbytes, " bytes");
    DCPP_CHECK(e.end <= data_size, what, " has data_offsets [", e.begin, ", ", e.end,
               "] beyond the data area (", data_size, " bytes; the file is truncated or corrupt)");
    h.entries.push_back(std::move(e));
  }
  // No two tensors may share bytes.
  std::vector<const Entry*> by_begin;
  for (const Entry& e : h.entries) {
    if (e.end > e.begin) by_begin.push_back(&e);
  }
  std::sort(by_begin.begin(), by_begin.end(),
            [](const Entry* a, const Entry* b) { return std::tie(a->begin, a->end) < std::tie(b->begin, b->end); });
  for (size_t i = 1; i < by_begin.size(); ++i) {
    const Entry& a = *by_begin[i - 1];
    const Entry& b = *by_begin[i];
    DCPP_CHECK(b.begin >= a.end, "safetensors file ", path, ": tensors '", a.name, "' [", a.begin,
               ", ", a.end, ") and '", b.name, "' [", b.begin, ", ", b.end, ") overlap");
  }
  return h;
}

// The weight_map of the index file `path`: tensor name -> file.
std::map<std::string, std::string> ReadIndex(FileSystemReader& reader, const std::string& index,
                                             const std::string& path) {
  std::unique_ptr<FileSource> src = reader.Open(index);
  std::string text(static_cast<size_t>(src->Size()), '\0');
  src->ReadAt(0, text.data(), text.size());
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  DCPP_CHECK(!doc.is_discarded(), "safetensors index ", path, " is not valid JSON");
  DCPP_CHECK(doc.is_object() && doc.contains("weight_map") && doc["weight_map"].is_object(),
             "safetensors index ", path, " has no weight_map object");
  std::map<std::string, std::string> map;
  for (const auto& [name, file] : doc["weight_map"].items()) {
    DCPP_CHECK(file.is_string(), "safetensors index ", path, ": tensor '", name,
               "' maps to ", file.dump(), ", not a file name");
    const std::string f = file.get<std::string>();
    DCPP_CHECK(IsPlainFileName(f), "safetensors index ", path, ": tensor '", name, "' maps to '", f,
               "', which is not a plain file name in the folder");
    map[name] = f;
  }
  return map;
}

// PyTorch DCP's sharding of a file's tensors (HuggingFaceStorageWriter,
// serialization_format=SAFETENSORS): __metadata__ "DCP_SHARDING_INFO", JSON
// {name: {"saved_offsets": [..]}}, where each tensor of the file lies in the whole one.
constexpr char kDcpShardingKey[] = "DCP_SHARDING_INFO";
using DcpSharding = std::map<std::string, std::vector<int64_t>>;

DcpSharding ReadDcpSharding(const std::map<std::string, std::string>& metadata, const std::string& path) {
  DcpSharding out;
  auto it = metadata.find(kDcpShardingKey);
  if (it == metadata.end()) return out;
  const json doc = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  DCPP_CHECK(!doc.is_discarded() && doc.is_object(), "safetensors file ", path, ": __metadata__ ",
             kDcpShardingKey, " is not a JSON object");
  for (const auto& [name, v] : doc.items()) {
    const std::string what = StrCat("safetensors file ", path, ": ", kDcpShardingKey, " of tensor '", name, "'");
    DCPP_CHECK(v.is_object() && v.contains("saved_offsets") && v["saved_offsets"].is_array(), what,
               " has no saved_offsets list");
    std::vector<int64_t>& offsets = out[name];
    for (const json& o : v["saved_offsets"]) {
      DCPP_CHECK(o.is_number_unsigned() && o.get<uint64_t>() < (uint64_t{1} << 62), what, ": saved_offsets ",
                 v["saved_offsets"].dump(), " are not non-negative integers");
      offsets.push_back(o.get<int64_t>());
    }
  }
  return out;
}

}  // namespace

std::string DtypeFromSafetensors(const std::string& st_dtype) {
  const DtypeName* d = FindSafetensorsDtype(st_dtype);
  return d ? d->dcpp : "";
}

std::string DtypeToSafetensors(const std::string& dcpp_dtype) {
  for (const DtypeName& d : kDtypes) {
    if (dcpp_dtype == d.dcpp) return d.safetensors;
  }
  return "";
}

std::vector<int64_t> SafetensorsShape(const std::string& dcpp_dtype, std::vector<int64_t> shape,
                                      const std::string& key) {
  for (const DtypeName& d : kDtypes) {
    if (dcpp_dtype != d.dcpp || d.per == 1) continue;
    DCPP_CHECK(!shape.empty(), "key '", key, "' is a 0-d ", dcpp_dtype, " tensor, which safetensors' ",
               d.safetensors, " cannot hold (its shape counts ", d.per, " values a byte)");
    shape.back() *= d.per;
  }
  return shape;
}

SafetensorsReader::SafetensorsReader(const std::string& path) : dir_(FolderOf(path)), folder_(dir_, Env::Default(), /*follow_links=*/true) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  DCPP_CHECK(fs::exists(st), "no safetensors checkpoint at ", path, ": no such file or folder");
  if (!fs::is_directory(st)) {
    files_ = {fs::path(path).filename().string()};
    return;
  }
  std::vector<std::string> indexes = ListFiles(dir_, kIndexSuffix);
  if (std::find(indexes.begin(), indexes.end(), kSafetensorsIndex) != indexes.end()) {
    indexes = {kSafetensorsIndex};
  }
  DCPP_CHECK(indexes.size() <= 1, "safetensors checkpoint ", dir_, " has several index files (",
             indexes[0], ", ", indexes[1], "); give the path of one .safetensors file instead");
  if (!indexes.empty()) {
    index_ = indexes[0];
    std::set<std::string> files;
    for (const auto& [name, file] : ReadIndex(folder_, index_, dir_ + "/" + index_)) files.insert(file);
    files_.assign(files.begin(), files.end());
    return;
  }
  files_ = ListFiles(dir_, kSuffix);
  DCPP_CHECK(!files_.empty(), "no safetensors checkpoint in ", dir_, ": no ", kSafetensorsIndex,
             " and no *.safetensors files");
}

std::string SafetensorsReader::ReadMetadata() {
  std::map<std::string, std::string> weight_map;
  if (!index_.empty()) weight_map = ReadIndex(folder_, index_, dir_ + "/" + index_);

  proto::Metadata md;
  md.set_format_major(kFormatMajor);
  md.set_format_minor(kFormatMinor);
  md.set_creator("safetensors");
  md.set_world_size(1);
  md.set_checksum_algorithm(kNoChecksum);
  std::map<std::string, std::pair<std::string, proto::TensorMeta>> tensors;  // name -> (file, meta)
  for (const std::string& file : files_) {
    const std::string path = dir_ + "/" + file;
    std::error_code ec;
    DCPP_CHECK(index_.empty() || fs::exists(path, ec), "safetensors index ", dir_, "/", index_,
               " names file ", file, ", which is missing");
    const Header h = ReadHeader(folder_, file, path);
    for (const auto& [k, v] : h.metadata) {
      if (k != kDcpShardingKey) (*md.mutable_planner_data())[kPlannerPrefix + k] = v;
    }
    const DcpSharding sharding = ReadDcpSharding(h.metadata, path);
    for (const Entry& e : h.entries) {
      auto at = sharding.find(e.name);
      const bool sharded = at != sharding.end();
      auto [it, fresh] = tensors.try_emplace(e.name);
      proto::TensorMeta& t = it->second.second;
      // A tensor in several files must be DCP shards of one tensor (saved_offsets in each).
      DCPP_CHECK(fresh || (sharded && t.dtype() == e.dtype), "safetensors checkpoint ", dir_, ": tensor '", e.name,
                 "' is in both ", it->second.first, " and ", file, sharded ? " with different dtypes" : "");
      if (!index_.empty() && !sharded) {
        auto w = weight_map.find(e.name);
        DCPP_CHECK(w != weight_map.end(), "safetensors file ", path, " holds tensor '", e.name,
                   "', which ", index_, " does not list");
        DCPP_CHECK(w->second == file, "safetensors file ", path, " holds tensor '", e.name, "', which ",
                   index_, " places in ", w->second);
      }
      std::vector<int64_t> offsets(e.shape.size(), 0);
      if (sharded) {
        offsets = at->second;
        DCPP_CHECK(offsets.size() == e.shape.size(), "safetensors file ", path, ": tensor '", e.name,
                   "' has ", e.shape.size(), " dimensions but its ", kDcpShardingKey, " saved_offsets ", offsets.size());
      }
      if (fresh) {
        it->second.first = file;
        t.set_fqn(e.name);
        t.set_dtype(e.dtype);
        for (size_t d = 0; d < e.shape.size(); ++d) t.add_shape(0);
      }
      DCPP_CHECK(t.shape_size() == static_cast<int>(e.shape.size()), "safetensors checkpoint ", dir_, ": tensor '",
                 e.name, "' has ", t.shape_size(), " dimensions in ", it->second.first, " but ", e.shape.size(),
                 " in ", file);
      for (const proto::ChunkMeta& other : t.chunks()) {
        DCPP_CHECK(!std::equal(offsets.begin(), offsets.end(), other.offsets().begin(), other.offsets().end()),
                   "safetensors checkpoint ", dir_, ": tensor '", e.name, "' has a shard at the same offsets in ",
                   other.file(), " and ", file);
      }
      proto::ChunkMeta* c = t.add_chunks();
      for (size_t d = 0; d < e.shape.size(); ++d) {
        c->add_offsets(offsets[d]);
        c->add_sizes(e.shape[d]);
        // The tensor spans its shards (as PyTorch's HuggingFaceStorageReader takes it).
        t.set_shape(static_cast<int>(d), std::max(t.shape(static_cast<int>(d)), offsets[d] + e.shape[d]));
      }
      c->set_file(file);
      c->set_offset(h.data_start + e.begin);
      c->set_length(e.end - e.begin);
    }
  }
  for (const auto& [name, file] : weight_map) {
    DCPP_CHECK(tensors.count(name), "safetensors index ", dir_, "/", index_, " lists tensor '", name,
               "' in ", file, ", but ", dir_, "/", file, " does not hold it");
  }
  for (auto& [name, entry] : tensors) *md.add_tensors() = std::move(entry.second);
  return SerializeMetadata(md);
}

std::unique_ptr<FileSource> SafetensorsReader::Open(const std::string& name) {
  DCPP_CHECK(std::find(files_.begin(), files_.end(), name) != files_.end(), "safetensors checkpoint ",
             dir_, " has no file '", name, "'");
  return folder_.Open(name);
}

bool IsSafetensors(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::is_regular_file(st)) return EndsWith(fs::path(path).filename().string(), kSuffix);
  if (!fs::is_directory(st) || fs::exists(fs::path(path) / ".metadata", ec)) return false;
  return !ListFiles(path, kIndexSuffix).empty() || !ListFiles(path, kSuffix).empty();
}

namespace {

// A .safetensors file, or a folder of them (after the formats with a .metadata: a folder that
// has one is theirs).
const FormatRegistration kSafetensorsFormat({
    Format::kSafetensors.name(), /*rank=*/2, "*.safetensors",
    [](const std::string& path) { return IsSafetensors(path); },
    [](const std::string& path) -> std::unique_ptr<StorageReader> { return std::make_unique<SafetensorsReader>(path); },
    nullptr, "export consolidated safetensors with //scripts:export_safetensors"});

}  // namespace

}  // namespace dcpp
