#include "core/storage/dcp/dcp.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "core/base/error.h"
#include "core/base/parallel.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/registry.h"

namespace dcpp {

struct DcpReader::CrcIndex {
  std::map<std::string, std::vector<DcpCrcRange>> by_file;  // each sorted by offset
};

namespace {

using pickle::Value;
using pickle::ValuePtr;

constexpr char kMd[] = "torch.distributed.checkpoint.metadata";
constexpr char kOldMd[] = "torch.distributed._shard.sharded_tensor.metadata";
constexpr char kFs[] = "torch.distributed.checkpoint.filesystem";
constexpr char kStrided[] = "#strided@";

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

// Key of a chunk's storage entry: FQN and chunk offsets ("" offsets for blobs).
using IndexKey = std::pair<std::string, std::vector<int64_t>>;

struct StorageInfo {
  std::string file;
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct Parsed {
  ValuePtr root;
  std::map<IndexKey, StorageInfo> storage;
};

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
    const ValuePtr transforms = v->Attr("transform_descriptors");
    if (transforms && !transforms->Is(Value::Kind::kNone)) {
      DCPP_CHECK(transforms->AsSeq(what).empty(), what, " uses stream transforms ",
                 pickle::Repr(*transforms, 120), " (e.g. compression), which dcpp does not read");
    }
    StorageInfo info;
    info.file = path->AsStr(what + ": relative_path");
    DCPP_CHECK(IsPlainFileName(info.file) && info.file.find(kStrided) == std::string::npos, what,
               " names file '", info.file, "', which is not a plain file name inside the checkpoint folder");
    const int64_t o = offset->AsInt(what), l = length->AsInt(what);
    DCPP_CHECK(o >= 0 && l >= 0, what, ": negative offset or length");
    info.offset = static_cast<uint64_t>(o);
    info.length = static_cast<uint64_t>(l);
    p.storage[key] = info;
  }
  return p;
}

// DefaultSavePlanner's planner_data: for each flattened key, the path of dict keys (str) and
// list positions (int) it came from, e.g. 'optim.param_groups.0.lr' ->
// ('optim', 'param_groups', 0, 'lr'), 'net1.weight' -> ('net1.weight',). Kept as JSON
// ({fqn: [str or int, ...]}) in dcpp's planner data so that a conversion writes it back and
// PyTorch's tools that rebuild the nesting (dcp_to_torch_save) see the original structure.
std::string PathsJson(const ValuePtr& data) {
  if (!data || !data->Is(Value::Kind::kDict)) return "";
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : data->dict) {
    if (!k->Is(Value::Kind::kStr) || !(v->Is(Value::Kind::kTuple) || v->Is(Value::Kind::kList))) return "";
    nlohmann::json path = nlohmann::json::array();
    for (const ValuePtr& c : v->items) {
      if (c->Is(Value::Kind::kStr)) {
        path.push_back(c->str);
      } else if (c->Is(Value::Kind::kInt)) {
        path.push_back(c->i);
      } else {
        return "";  // a planner's own data, not a path mapping
      }
    }
    out[k->str] = std::move(path);
  }
  return out.dump();
}

// The rank in a "__<rank>_<n>.distcp" name, or -1.
long RankOf(const std::string& file) {
  long rank = -1, n = -1;
  return ParseDataFileName(file, &rank, &n) ? rank : -1;
}

// A chunk whose archive header is yet to be read.
struct Pending {
  proto::ChunkMeta* chunk;
  std::string fqn;
  std::string dtype;
  StorageInfo info;
};

void ResolveChunks(std::vector<Pending>& pending, StorageReader& files, const std::string& where,
                   int threads, std::vector<DcpCrcRange>* crcs) {
  if (crcs) crcs->assign(pending.size(), DcpCrcRange{});
  std::atomic<size_t> next{0};
  auto work = [&](int) {
    std::map<std::string, std::unique_ptr<FileSource>> open;
    try {
      for (size_t i = next++; i < pending.size(); i = next++) {
        Pending& p = pending[i];
        auto& src = open[p.info.file];
        if (!src) src = files.Open(p.info.file);
        const std::string item = StrCat(where, "/", p.info.file, " (key '", p.fqn, "', item at byte ",
                                        p.info.offset, ")");
        DCPP_CHECK(p.info.offset + p.info.length <= src->Size(), item, ": the file has only ",
                   src->Size(), " bytes (truncated)");
        const torch_archive::StoredTensor t =
            torch_archive::ReadTensorItem(*src, p.info.offset, p.info.length, item);
        const std::vector<int64_t> sizes(p.chunk->sizes().begin(), p.chunk->sizes().end());
        DCPP_CHECK(t.dtype == p.dtype, item, ": holds ", t.dtype, " data but the metadata says ", p.dtype);
        DCPP_CHECK(t.sizes == sizes, item, ": holds a tensor of shape ", Box{{}, t.sizes}.ToString(),
                   " but the metadata's chunk has sizes ", Box{{}, sizes}.ToString());
        const uint64_t nbytes = p.chunk->length();
        if (crcs) {
          std::string at;
          for (int d = 0; d < p.chunk->offsets_size(); ++d) {
            at += StrCat(d ? ", " : "", p.chunk->offsets(d), ":", p.chunk->offsets(d) + p.chunk->sizes(d));
          }
          (*crcs)[i] = {p.info.file, t.storage_file_offset, t.storage_bytes, t.storage_crc32, false,
                        StrCat("key '", p.fqn, "' chunk [", at, "] in ", where, "/", p.info.file,
                               " (item at byte ", p.info.offset, ")")};
        }
        if (t.contiguous()) {
          p.chunk->set_file(p.info.file);
          p.chunk->set_offset(nbytes == 0 ? t.storage_file_offset : t.data_offset());
        } else {
          p.chunk->set_file(StrCat(p.info.file, kStrided, p.info.offset, "+", p.info.length));
          p.chunk->set_offset(0);
        }
      }
    } catch (...) {
      next = pending.size();  // the other threads stop too
      throw;
    }
  };
  ParallelFor(std::max(1, std::min<int>(threads, static_cast<int>(pending.size() / 64) + 1)), work);
}

// Checks the CRC-32 of each item of one file as its bytes are read (see
// DcpReader::VerifyOwnChecksums).
class CrcCheckingSource final : public FileSource {
 public:
  CrcCheckingSource(std::unique_ptr<FileSource> inner, std::shared_ptr<const DcpReader::CrcIndex> index,
                    const std::vector<DcpCrcRange>* ranges, std::shared_ptr<std::atomic<int64_t>> checked)
      : inner_(std::move(inner)), index_(std::move(index)), ranges_(*ranges), checked_(std::move(checked)) {}

  void ReadAt(uint64_t offset, void* data, size_t length) override {
    inner_->ReadAt(offset, data, length);
    if (length == 0) return;
    const uint64_t end = offset + length;
    // The first range that ends after `offset`, then every one that begins before `end`.
    auto it = std::upper_bound(ranges_.begin(), ranges_.end(), offset,
                               [](uint64_t o, const DcpCrcRange& r) { return o < r.offset + r.length; });
    for (; it != ranges_.end() && it->offset < end; ++it) {
      Feed(static_cast<size_t>(it - ranges_.begin()), offset, static_cast<const char*>(data), end);
    }
  }
  uint64_t Size() override { return inner_->Size(); }

 private:
  static constexpr uint64_t kLost = ~uint64_t{0};  // read out of order: unchecked until restarted
  struct State {
    uint64_t next = 0;  // bytes of the range hashed so far, in order
    uint32_t crc = 0;
  };

  void Feed(size_t i, uint64_t offset, const char* data, uint64_t end) {
    const DcpCrcRange& r = ranges_[i];
    const uint64_t a = std::max(offset, r.offset), b = std::min(end, r.offset + r.length);
    const char* p = data + (a - offset);
    if (r.archive) {  // a bytes item: checked when it is read in one piece
      if (a == r.offset && b == r.offset + r.length) {
        torch_archive::CheckEntryCrcs(p, r.length, r.what);
        *checked_ += 1;
      }
      return;
    }
    State& s = state_[i];
    if (a == r.offset) s = State{};  // (re)starts at the item's first byte
    if (s.next == kLost || a != r.offset + s.next) {
      s.next = kLost;
      return;
    }
    s.crc = torch_archive::Crc32(p, b - a, s.crc);
    s.next += b - a;
    if (s.next < r.length) return;
    const uint32_t crc = s.crc;
    state_.erase(i);
    char got[11], want[11];
    std::snprintf(got, sizeof got, "0x%08x", crc);
    std::snprintf(want, sizeof want, "0x%08x", r.crc32);
    DCPP_CHECK(crc == r.crc32, r.what, ": the tensor data fails its CRC-32 (recorded ", want,
               ", computed ", got, "): the data file is corrupt");
    *checked_ += 1;
  }

  std::unique_ptr<FileSource> inner_;
  std::shared_ptr<const DcpReader::CrcIndex> index_;  // keeps ranges_ alive
  const std::vector<DcpCrcRange>& ranges_;
  std::shared_ptr<std::atomic<int64_t>> checked_;
  std::map<size_t, State> state_;
};

// Serves a non-contiguous DCP chunk as row-major bytes (materialized on first read).
class StridedSource final : public FileSource {
 public:
  StridedSource(std::unique_ptr<FileSource> file, std::string where, uint64_t offset, uint64_t length)
      : file_(std::move(file)), where_(std::move(where)), offset_(offset), length_(length) {}

  void ReadAt(uint64_t offset, void* data, size_t length) override {
    Materialize();
    DCPP_CHECK(offset <= bytes_.size() && length <= bytes_.size() - offset, where_,
               ": read past the end of the chunk");
    std::memcpy(data, bytes_.data() + offset, length);
  }
  uint64_t Size() override {
    Materialize();
    return bytes_.size();
  }

 private:
  void Materialize() {
    if (done_) return;
    const torch_archive::StoredTensor t = torch_archive::ReadTensorItem(*file_, offset_, length_, where_);
    std::string storage(t.storage_bytes, '\0');
    file_->ReadAt(t.storage_file_offset, storage.data(), storage.size());
    const c10::ScalarType dtype = DtypeFromName(t.dtype);
    const int64_t es = ElementSize(dtype);
    // Reorder as bytes: each element is `es` bytes, a trailing dimension of the view.
    const at::Tensor raw = at::from_blob(storage.data(), {static_cast<int64_t>(storage.size())}, at::kByte);
    std::vector<int64_t> sizes = t.sizes, strides;
    for (int64_t s : t.strides) strides.push_back(s * es);
    sizes.push_back(es);
    strides.push_back(1);
    const at::Tensor dense = raw.as_strided(sizes, strides, t.storage_offset * es).contiguous();
    bytes_.assign(static_cast<const char*>(dense.const_data_ptr()), static_cast<size_t>(dense.numel()));
    done_ = true;
  }

  std::unique_ptr<FileSource> file_;
  std::string where_;
  uint64_t offset_, length_;
  bool done_ = false;
  std::string bytes_;
};

// --- writing ---

void PutSize(pickle::Writer& w, const std::vector<int64_t>& v) {
  w.Global("torch", "Size").Mark();
  for (int64_t x : v) w.Int(x);
  w.Tuple().Tuple(1).Reduce();
}

// NEWOBJ of a DCP class, then its state dict of `n` pairs that the caller writes between
// BeginObject and EndObject.
void BeginObject(pickle::Writer& w, const char* module, const char* cls) {
  w.Global(module, cls).Tuple(0).NewObj().EmptyDict().Mark();
}
void EndObject(pickle::Writer& w) { w.SetItems().Build(); }

std::string NewSaveId() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^
                      static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()));
  const uint64_t a = gen(), b = gen();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                static_cast<unsigned>(0x8000 | ((b >> 48) & 0x3fff)),
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

}  // namespace

bool IsDcpMetadata(const std::string& metadata) {
  return !metadata.empty() && static_cast<uint8_t>(metadata[0]) == 0x80;
}

proto::Metadata ReadDcpMetadata(const std::string& bytes, StorageReader& files, const std::string& where,
                                int threads, std::vector<DcpCrcRange>* crcs) {
  const std::string md_where = where + "/.metadata";
  const Parsed p = Parse(bytes, md_where);
  proto::Metadata out;
  out.set_format_major(kFormatMajor);
  out.set_format_minor(kFormatMinor);
  out.set_checksum_algorithm(kNoChecksum);
  const ValuePtr version = p.root->Attr("version");
  const bool versioned = version && version->Is(Value::Kind::kStr);
  out.set_creator(StrCat("PyTorch DCP (metadata version ", versioned ? version->str : "unversioned", ")"));
  (*out.mutable_planner_data())["dcp.version"] = versioned ? version->str : "";
  const std::string paths = PathsJson(p.root->Attr("planner_data"));
  if (!paths.empty()) (*out.mutable_planner_data())[kDcpPaths] = paths;

  const ValuePtr sdm = p.root->Attr("state_dict_metadata");
  DCPP_CHECK(sdm && sdm->Is(Value::Kind::kDict), md_where, ": state_dict_metadata is missing");
  std::vector<Pending> pending;
  std::vector<DcpCrcRange> blob_crcs;
  // (`pending` keeps pointers to chunk messages: a repeated field's elements never move.)
  long max_rank = -1;
  for (const auto& [k, v] : sdm->dict) {
    const std::string fqn = k->AsStr(md_where + ": state_dict_metadata key");
    const std::string what = StrCat(md_where, ": key '", fqn, "'");
    if (v->IsObjectOf(kMd, "BytesStorageMetadata")) {
      auto it = p.storage.find({fqn, {}});
      DCPP_CHECK(it != p.storage.end(), what, ": the blob has no storage_data entry");
      proto::BytesMeta* b = out.add_bytes();
      b->set_fqn(fqn);
      b->set_file(it->second.file);
      b->set_offset(it->second.offset);
      b->set_length(it->second.length);
      max_rank = std::max(max_rank, RankOf(it->second.file));
      blob_crcs.push_back({it->second.file, it->second.offset, it->second.length, 0, true,
                           StrCat("bytes key '", fqn, "' in ", where, "/", it->second.file,
                                  " (item at byte ", it->second.offset, ")")});
      continue;
    }
    DCPP_CHECK(v->IsObjectOf(kMd, "TensorStorageMetadata"), what, ": ", pickle::Repr(*v, 80),
               " is neither TensorStorageMetadata nor BytesStorageMetadata");
    const ValuePtr props = v->Attr("properties");
    DCPP_CHECK(props != nullptr, what, ": no properties");
    proto::TensorMeta* t = out.add_tensors();
    t->set_fqn(fqn);
    t->set_dtype(DtypeOf(*props, what));
    const std::vector<int64_t> shape = SizeOf(v->Attr("size"), what + ": size");
    for (int64_t s : shape) t->add_shape(s);
    const int64_t es = ElementSize(DtypeFromName(t->dtype()));
    const ValuePtr chunks = v->Attr("chunks");
    DCPP_CHECK(chunks != nullptr, what, ": no chunks");
    for (const ValuePtr& c : chunks->AsSeq(what + ": chunks")) {
      DCPP_CHECK(c->IsObjectOf(kMd, "ChunkStorageMetadata"), what, ": chunk ", pickle::Repr(*c, 80),
                 " is not a ChunkStorageMetadata");
      const std::vector<int64_t> offsets = SizeOf(c->Attr("offsets"), what + ": chunk offsets");
      const std::vector<int64_t> sizes = SizeOf(c->Attr("sizes"), what + ": chunk sizes");
      DCPP_CHECK(offsets.size() == shape.size() && sizes.size() == shape.size(), what,
                 ": chunk of rank ", sizes.size(), " in a tensor of rank ", shape.size());
      auto it = p.storage.find({fqn, offsets});
      DCPP_CHECK(it != p.storage.end(), what, ": chunk ", Box{offsets, sizes}.ToString(),
                 " has no storage_data entry");
      proto::ChunkMeta* cm = t->add_chunks();
      for (int64_t o : offsets) cm->add_offsets(o);
      for (int64_t s : sizes) cm->add_sizes(s);
      cm->set_length(static_cast<uint64_t>(Box{offsets, sizes}.numel() * es));
      pending.push_back({cm, fqn, t->dtype(), it->second});
      max_rank = std::max(max_rank, RankOf(it->second.file));
    }
  }
  out.set_world_size(static_cast<int32_t>(std::max(1L, max_rank + 1)));
  ResolveChunks(pending, files, where, threads, crcs);
  if (crcs) {
    // Empty storages have nothing to check; duplicate chunks share one item.
    crcs->erase(std::remove_if(crcs->begin(), crcs->end(), [](const DcpCrcRange& r) { return r.length == 0; }),
                crcs->end());
    crcs->insert(crcs->end(), blob_crcs.begin(), blob_crcs.end());
  }
  return out;
}

std::vector<std::string> DcpFiles(const std::string& bytes, const std::string& where) {
  std::set<std::string> files;
  for (const auto& kv : Parse(bytes, where).storage) files.insert(kv.second.file);
  return {files.begin(), files.end()};
}

DcpArchiveCheck CheckDcpArchives(const std::string& dir) {
  FileSystemReader files(dir);
  const Parsed p = Parse(files.ReadMetadata(), dir + "/.metadata");
  DcpArchiveCheck out;
  std::map<std::string, std::unique_ptr<FileSource>> open;
  std::vector<char> buf(8 << 20);
  for (const auto& [key, info] : p.storage) {
    std::string at;
    for (size_t d = 0; d < key.second.size(); ++d) at += (d ? ", " : "") + std::to_string(key.second[d]);
    const std::string what = StrCat("key '", key.first, "'", key.second.empty() ? "" : " chunk at [" + at + "]",
                                    " in ", dir, "/", info.file, " (item at byte ", info.offset, ")");
    out.items += 1;
    try {
      auto& src = open[info.file];
      if (!src) src = files.Open(info.file);
      DCPP_CHECK(info.offset <= src->Size() && info.length <= src->Size() - info.offset, what,
                 ": the file has only ", src->Size(), " bytes (truncated)");
      const std::vector<std::string> structure =
          torch_archive::CheckZipStructure(*src, info.offset, info.length, what);
      out.problems.insert(out.problems.end(), structure.begin(), structure.end());
      if (!structure.empty()) continue;  // (its entries cannot be trusted to be where they say)
      for (const torch_archive::ZipEntry& e :
           torch_archive::ReadZipDirectory(*src, info.offset, info.length, what)) {
        uint32_t crc = 0;
        for (uint64_t done = 0; done < e.size;) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), e.size - done));
          src->ReadAt(e.data_offset + done, buf.data(), n);
          crc = torch_archive::Crc32(buf.data(), n, crc);
          done += n;
        }
        out.entries += 1;
        out.bytes += static_cast<int64_t>(e.size);
        if (crc != e.crc32) {
          out.problems.push_back(StrCat(what, ": entry ", e.name, " fails its CRC-32 (recorded ",
                                        e.crc32, ", computed ", crc, "): the data is corrupt"));
        }
      }
    } catch (const std::exception& e) {
      out.problems.push_back(ErrorMessage(e));
    }
  }
  const std::vector<std::string> unsafe = UnsafeDcpObjects(dir);
  out.problems.insert(out.problems.end(), unsafe.begin(), unsafe.end());
  return out;
}

std::vector<std::string> UnsafeDcpObjects(const std::string& dir) {
  FileSystemReader files(dir);
  const Parsed p = Parse(files.ReadMetadata(), dir + "/.metadata");
  std::vector<std::string> out;
  const ValuePtr sdm = p.root->Attr("state_dict_metadata");
  if (!sdm || !sdm->Is(Value::Kind::kDict)) return out;
  std::map<std::string, std::unique_ptr<FileSource>> open;
  for (const auto& [k, v] : sdm->dict) {
    if (!k->Is(Value::Kind::kStr) || !v->IsObjectOf(kMd, "BytesStorageMetadata")) continue;
    auto it = p.storage.find({k->str, {}});
    if (it == p.storage.end()) continue;  // (ReadDcpMetadata names that)
    const StorageInfo& info = it->second;
    const std::string what = StrCat("bytes key '", k->str, "' in ", dir, "/", info.file, " (item at byte ",
                                    info.offset, ")");
    try {
      auto& src = open[info.file];
      if (!src) src = files.Open(info.file);
      DCPP_CHECK(info.length <= (1u << 30), what, ": a bytes item of ", info.length,
                 " bytes is too large to search for unsafe globals");
      std::string data(info.length, '\0');
      src->ReadAt(info.offset, data.data(), data.size());
      // A broken archive is CheckDcpArchives' to report; its pickle is searched when it opens.
      if (!torch_archive::IsTorchSaveArchive(data)) continue;
      const std::vector<std::string> globals = torch_archive::UnsafeGlobals(data, what);
      if (globals.empty()) continue;
      std::string names;
      for (const std::string& g : globals) names += (names.empty() ? "" : ", ") + g;
      out.push_back(StrCat(what, ": its pickle names ", names, ", outside the globals a state dict uses "
                           "(torch.load(weights_only=True) refuses ", globals.size() == 1 ? "it" : "them",
                           "); PyTorch's dcp.load would import and call ", globals.size() == 1 ? "it" : "them"));
    } catch (const std::exception& e) {
      out.push_back(StrCat(what, ": its pickle cannot be checked for unsafe globals (", ErrorMessage(e),
                           "); PyTorch's dcp.load would run whatever it holds"));
    }
  }
  return out;
}

DcpReader::DcpReader(std::string dir, Env* env) : files_(std::move(dir), env) {}

std::string DcpReader::ReadMetadata() {
  const std::string bytes = files_.ReadMetadata();
  DCPP_CHECK(IsDcpMetadata(bytes), "checkpoint ", files_.Describe(),
             ": .metadata is not a PyTorch DCP pickle");
  std::vector<DcpCrcRange> crcs;
  const std::string md = SerializeMetadata(ReadDcpMetadata(bytes, files_, files_.Describe(), 8, &crcs));
  auto index = std::make_shared<CrcIndex>();
  for (DcpCrcRange& r : crcs) index->by_file[r.file].push_back(std::move(r));
  for (auto& [file, ranges] : index->by_file) {
    std::sort(ranges.begin(), ranges.end(),
              [](const DcpCrcRange& a, const DcpCrcRange& b) { return a.offset < b.offset; });
    // Chunks listed twice point at one item: keep it once. Ranges that overlap otherwise
    // (not what DCP writes) are left unchecked rather than misreported.
    ranges.erase(std::unique(ranges.begin(), ranges.end(),
                             [](const DcpCrcRange& a, const DcpCrcRange& b) {
                               return a.offset == b.offset && a.length == b.length;
                             }),
                 ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].offset < ranges[i - 1].offset + ranges[i - 1].length) {
        ranges.clear();
        break;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  crcs_ = std::move(index);
  return md;
}

void DcpReader::VerifyOwnChecksums(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  verify_ = on;
}

std::string DcpReader::LocalPath(const std::string& name) const {
  return name.find(kStrided) == std::string::npos ? files_.LocalPath(name) : "";
}

std::unique_ptr<FileSource> DcpReader::Open(const std::string& name) {
  const size_t at = name.find(kStrided);
  const std::string file = name.substr(0, at);
  std::unique_ptr<FileSource> src = files_.Open(file);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (verify_ && crcs_) {
      auto it = crcs_->by_file.find(file);
      if (it != crcs_->by_file.end() && !it->second.empty()) {
        src = std::make_unique<CrcCheckingSource>(std::move(src), crcs_, &it->second, checked_);
      }
    }
  }
  if (at == std::string::npos) return src;
  // "<offset>+<length>", plain decimal numbers that fit in a uint64 (as ResolveChunks wrote).
  uint64_t offset = 0, length = 0;
  const char* p = name.data() + at + std::strlen(kStrided);
  const char* end = name.data() + name.size();
  const auto a = std::from_chars(p, end, offset);
  const bool ok = a.ec == std::errc() && a.ptr != end && *a.ptr == '+' &&
                  std::from_chars(a.ptr + 1, end, length).ec == std::errc() &&
                  std::from_chars(a.ptr + 1, end, length).ptr == end;
  DCPP_CHECK(ok, "checkpoint ", Describe(), ": bad item name '", name, "'");
  return std::make_unique<StridedSource>(std::move(src), StrCat(Describe(), "/", file, " (item at byte ", offset, ")"),
                                         offset, length);
}

// --- writer ---

namespace {

// A data file being written: forwards every write and accumulates each chunk's CRC-32 while
// its bytes arrive in order; Finish() writes the archive frames around the chunks.
class DcpSink final : public FileSink {
 public:
  DcpSink(std::unique_ptr<FileSink> inner, Env* env, std::string path, std::vector<DcpWriter::Item> items)
      : inner_(std::move(inner)), env_(env), path_(std::move(path)), items_(std::move(items)) {
    std::sort(items_.begin(), items_.end(),
              [](const auto& a, const auto& b) { return a.data_offset < b.data_offset; });
    crc_.resize(items_.size());
  }

  void WriteAt(uint64_t offset, const void* data, size_t length) override {
    inner_->WriteAt(offset, data, length);
    auto it = std::upper_bound(items_.begin(), items_.end(), offset,
                               [](uint64_t off, const DcpWriter::Item& i) { return off < i.data_offset; });
    if (it == items_.begin()) return;
    const size_t k = static_cast<size_t>(it - items_.begin()) - 1;
    const DcpWriter::Item& item = items_[k];
    if (offset >= item.data_offset + item.nbytes) return;
    Crc& c = crc_[k];
    if (c.in_order && offset == item.data_offset + c.length && offset + length <= item.data_offset + item.nbytes) {
      c.value = torch_archive::Crc32(data, length, c.value);
      c.length += length;
    } else {
      c.in_order = false;
    }
  }

  void Finish() override {
    for (size_t k = 0; k < items_.size(); ++k) {
      const DcpWriter::Item& item = items_[k];
      uint32_t crc = crc_[k].value;
      if (!crc_[k].in_order || crc_[k].length != item.nbytes) crc = ReadBackCrc(item);
      const torch_archive::TensorArchive archive(item.dtype, item.sizes, item.nbytes);
      const std::string& prefix = archive.prefix();
      inner_->WriteAt(item.data_offset - prefix.size(), prefix.data(), prefix.size());
      const std::string suffix = archive.suffix(crc);
      inner_->WriteAt(item.data_offset + item.nbytes, suffix.data(), suffix.size());
    }
    inner_->Finish();
  }

 private:
  struct Crc {
    uint32_t value = 0;
    uint64_t length = 0;
    bool in_order = true;
  };

  // The chunk was written out of order: hash it from the file.
  uint32_t ReadBackCrc(const DcpWriter::Item& item) {
    auto src = env_->OpenFile(path_);
    std::vector<char> buf(kIoBlockBytes);
    uint32_t crc = 0;
    uint64_t done = 0;
    while (done < item.nbytes) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), item.nbytes - done));
      src->ReadAt(item.data_offset + done, buf.data(), n);
      crc = torch_archive::Crc32(buf.data(), n, crc);
      done += n;
    }
    return crc;
  }

  std::unique_ptr<FileSink> inner_;
  Env* env_;
  std::string path_;
  std::vector<DcpWriter::Item> items_;
  std::vector<Crc> crc_;
};

}  // namespace

namespace {

// The data files of the checkpoint committed in a folder: a DCP pickle's, or a native one's.
std::optional<std::vector<std::string>> DcpOrNativeFiles(const std::string& bytes) {
  if (!IsDcpMetadata(bytes)) return NativeMetadataFiles(bytes);
  try {
    return DcpFiles(bytes, kMetadataName);
  } catch (const Error&) {
    return std::nullopt;  // unreadable: nothing can be told apart from debris
  }
}

}  // namespace

DcpWriter::DcpWriter(std::string dir, Env* env) : dir_(std::move(dir)), env_(env), files_(dir_, env, DcpOrNativeFiles) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

ItemFrame DcpWriter::Frame(const proto::PlanItem& item) const {
  if (item.is_bytes()) return {};
  const torch_archive::TensorArchive a(item.dtype(), {item.sizes().begin(), item.sizes().end()}, item.nbytes());
  return {a.prefix().size(), a.suffix_size()};
}

void DcpWriter::Placed(const proto::SavePlan& plan) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const proto::PlanItem& it : plan.items()) {
    if (it.is_bytes()) continue;
    placed_[it.file()].push_back({it.dtype(), {it.sizes().begin(), it.sizes().end()}, it.file_offset(), it.nbytes()});
  }
}

std::unique_ptr<FileSink> DcpWriter::Open(const std::string& name) {
  std::vector<Item> items;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = placed_.find(name);
    if (it != placed_.end()) items = it->second;
  }
  return std::make_unique<DcpSink>(files_.Open(name), env_, dir_ + "/" + name, std::move(items));
}

std::string DcpWriter::EncodeBytes(const std::string& blob) const {
  // A torch.save'd object (e.g. a blob read from a DCP checkpoint) is kept as it is, even one
  // dcpp cannot decode; any other blob becomes a Python bytes object.
  if (torch_archive::IsTorchSaveArchive(blob)) return blob;
  return torch_archive::EncodeObject(*pickle::Value::Bytes(blob));
}

CommitReport DcpWriter::Commit(const std::string& metadata, const std::vector<std::string>& keep) {
  const proto::Metadata md = ParseMetadata(metadata, dir_);
  return files_.Commit(WriteDcpMetadata(md, dir_), keep);
}

std::string WriteDcpMetadata(const proto::Metadata& md, const std::string& checkpoint_id) {
  pickle::Writer w(4);
  BeginObject(w, kMd, "Metadata");

  w.Str("state_dict_metadata").EmptyDict().Mark();
  for (const proto::TensorMeta& t : md.tensors()) {
    w.Str(t.fqn());
    BeginObject(w, kMd, "TensorStorageMetadata");
    w.Str("properties");
    w.Global(kMd, "TensorProperties").Tuple(0).NewObj();
    w.Mark();
    w.Global("torch", t.dtype());
    w.Global("torch.serialization", "_get_layout").Str("torch.strided").Tuple(1).Reduce();
    w.Bool(false);
    w.Global(kMd, "_MEM_FORMAT_ENCODING").Int(0).Tuple(1).Reduce();
    w.Bool(false);
    w.Tuple().Build();
    w.Str("size");
    PutSize(w, {t.shape().begin(), t.shape().end()});
    w.Str("chunks").EmptyList().Mark();
    for (const proto::ChunkMeta& c : t.chunks()) {
      BeginObject(w, kMd, "ChunkStorageMetadata");
      w.Str("offsets");
      PutSize(w, {c.offsets().begin(), c.offsets().end()});
      w.Str("sizes");
      PutSize(w, {c.sizes().begin(), c.sizes().end()});
      EndObject(w);
    }
    w.Appends();
    EndObject(w);
  }
  for (const proto::BytesMeta& b : md.bytes()) {
    w.Str(b.fqn());
    w.Global(kMd, "BytesStorageMetadata").Tuple(0).NewObj();
  }
  w.SetItems();

  // How each flattened key nests (as DefaultSavePlanner records it): the path the source
  // checkpoint recorded when it still names this key, else the key as one component (what
  // PyTorch writes for a flat state dict's keys).
  nlohmann::json known = nlohmann::json::object();
  auto it = md.planner_data().find(kDcpPaths);
  if (it != md.planner_data().end()) {
    known = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    if (!known.is_object()) known = nlohmann::json::object();
  }
  w.Str("planner_data").EmptyDict().Mark();
  auto path = [&](const std::string& fqn) {
    w.Str(fqn).Mark();
    auto p = known.find(fqn);
    std::string joined;
    if (p != known.end() && p->is_array()) {
      for (const auto& c : *p) {
        joined += (joined.empty() ? "" : ".") + (c.is_string() ? c.get<std::string>() : c.dump());
      }
    }
    if (p != known.end() && joined == fqn) {
      for (const auto& c : *p) {
        if (c.is_string()) {
          w.Str(c.get<std::string>());
        } else {
          w.Int(c.get<int64_t>());
        }
      }
    } else {
      w.Str(fqn);
    }
    w.Tuple();
  };
  for (const proto::TensorMeta& t : md.tensors()) path(t.fqn());
  for (const proto::BytesMeta& b : md.bytes()) path(b.fqn());
  w.SetItems();

  w.Str("storage_data").EmptyDict().Mark();
  auto info = [&](const std::string& file, uint64_t offset, uint64_t length) {
    BeginObject(w, kFs, "_StorageInfo");
    w.Str("relative_path").Str(file);
    w.Str("offset").Int(static_cast<int64_t>(offset));
    w.Str("length").Int(static_cast<int64_t>(length));
    EndObject(w);
  };
  for (const proto::TensorMeta& t : md.tensors()) {
    int index = 0;
    for (const proto::ChunkMeta& c : t.chunks()) {
      BeginObject(w, kMd, "MetadataIndex");
      w.Str("fqn").Str(t.fqn());
      w.Str("offset");
      PutSize(w, {c.offsets().begin(), c.offsets().end()});
      w.Str("index").Int(index++);
      EndObject(w);
      const torch_archive::TensorArchive a(t.dtype(), {c.sizes().begin(), c.sizes().end()}, c.length());
      info(c.file(), c.offset() - a.prefix().size(), a.prefix().size() + c.length() + a.suffix_size());
    }
  }
  for (const proto::BytesMeta& b : md.bytes()) {
    BeginObject(w, kMd, "MetadataIndex");
    w.Str("fqn").Str(b.fqn());
    w.Str("index").None();
    EndObject(w);
    info(b.file(), b.offset(), b.length());
  }
  w.SetItems();

  w.Str("storage_meta");
  BeginObject(w, kMd, "StorageMeta");
  w.Str("checkpoint_id").Str(checkpoint_id);
  w.Str("save_id").Str(NewSaveId());
  w.Str("load_id").None();
  w.Str("modules").EmptyList();
  EndObject(w);

  w.Str("version").Str(kDcpVersion);
  EndObject(w);
  return w.Finish();
}

namespace {

// A folder whose .metadata is a pickle (its first byte, PROTO: dcpp's protobuf never starts so).
const FormatRegistration kDcpFormat({
    Format::kDcp.name(), /*rank=*/0, kMetadataName,
    [](const std::string& path) {
      std::error_code ec;
      if (!std::filesystem::is_directory(path, ec)) return false;
      std::ifstream f(path + "/" + kMetadataName, std::ios::binary);
      char first = 0;
      return f.get(first) && IsDcpMetadata(std::string(1, first));
    },
    [](const std::string& path) -> std::unique_ptr<StorageReader> { return std::make_unique<DcpReader>(path); },
    [](const std::string& path) -> std::unique_ptr<StorageWriter> { return std::make_unique<DcpWriter>(path); },
    ""});

}  // namespace

}  // namespace dcpp
