// ReadDcpMetadata: DCP's .metadata translated into dcpp's metadata, with every chunk pointed
// at the tensor bytes inside its torch.save archive (each archive's header read, in parallel);
// and DcpFiles.
#include "core/storage/dcp/dcp.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/parallel.h"
#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/model/box.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/dcp_internal.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/dcp/zstd_stream.h"

namespace dcpp {
namespace {

using pickle::Value;
using pickle::ValuePtr;

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

// The sources one thread reads items through: data files, their compressed items'
// decompressed views (by View() name), and safetensors blobs already parsed.
class ItemSources {
 public:
  explicit ItemSources(StorageReader& files) : files_(files) {}
  std::shared_ptr<FileSource> File(const std::string& file) {
    auto& src = open_[file];
    if (!src) src = files_.Open(file);
    return src;
  }
  // The source that holds the item's own bytes (at info.ViewOffset()). A decompressed view is
  // not kept (its buffers are ~0.5 MiB; a folder may hold many thousands of items).
  std::shared_ptr<FileSource> View(const StorageInfo& info, const std::string& where) {
    if (!info.zstd) return File(info.file);
    return std::make_shared<ZstdSource>(File(info.file), info.offset, info.length, where);
  }
  const SafetensorsBlob& Blob(const StorageInfo& info, FileSource& view, const std::string& where) {
    auto it = blobs_.find(info.View());
    if (it == blobs_.end()) it = blobs_.emplace(info.View(), ReadSafetensorsBlob(view, info.ViewOffset(), where)).first;
    return it->second;
  }

 private:
  StorageReader& files_;
  std::map<std::string, std::shared_ptr<FileSource>> open_;
  std::map<std::string, SafetensorsBlob> blobs_;
};

// The chunk is a tensor of DCP's serialization_format=SAFETENSORS: points it at its bytes.
void ResolveSafetensors(Pending& p, ItemSources& sources, FileSource& view, const std::string& item) {
  const SafetensorsBlob& blob = sources.Blob(p.info, view, item);
  auto e = blob.entries.find(p.fqn);
  DCPP_CHECK(e != blob.entries.end(), item, ": the safetensors blob (DCP's serialization_format=SAFETENSORS) "
             "holds no tensor named '", p.fqn, "'");
  const std::vector<int64_t> offsets(p.chunk->offsets().begin(), p.chunk->offsets().end());
  const std::vector<int64_t> sizes(p.chunk->sizes().begin(), p.chunk->sizes().end());
  DCPP_CHECK(e->second.dtype == p.dtype, item, ": holds ", e->second.dtype, " data but the metadata says ", p.dtype);
  DCPP_CHECK(e->second.shape == sizes, item, ": holds a tensor of shape ", Box{{}, e->second.shape}.ToString(),
             " but the metadata's chunk has sizes ", Box{{}, sizes}.ToString());
  DCPP_CHECK(!e->second.has_offsets || e->second.saved_offsets == offsets, item,
             ": its DCP_SHARDING_INFO places it at ", Box{e->second.saved_offsets, sizes}.ToString(),
             " but the metadata's chunk is at ", Box{offsets, sizes}.ToString());
  p.chunk->set_file(p.info.View());
  p.chunk->set_offset(e->second.offset);
}

void ResolveChunks(std::vector<Pending>& pending, StorageReader& files, const std::string& where,
                   int threads, std::vector<DcpCrcRange>* crcs) {
  if (crcs) crcs->assign(pending.size(), DcpCrcRange{});
  std::atomic<size_t> next{0};
  auto work = [&](int) {
    ItemSources sources(files);
    try {
      for (size_t i = next++; i < pending.size(); i = next++) {
        Pending& p = pending[i];
        const std::shared_ptr<FileSource> file = sources.File(p.info.file);
        const std::string item = StrCat(where, "/", p.info.file, " (key '", p.fqn, "', ",
                                        p.info.zstd ? "zstd-compressed " : "", "item at byte ", p.info.offset, ")");
        DCPP_CHECK(p.info.offset + p.info.length <= file->Size(), item, ": the file has only ",
                   file->Size(), " bytes (truncated)");
        // DCP's serialization_format=SAFETENSORS with a stream transform compresses nothing of
        // a tensor's (an empty frame where its item would be) and appends the tensors plain.
        DCPP_CHECK(!p.info.zstd || p.chunk->length() == 0 ||
                       ZstdFrameContentSize(*file, p.info.offset, p.info.length) != 0,
                   item, ": the item is an empty zstd frame, as DCP's serialization_format=SAFETENSORS "
                   "writes with stream transforms (its tensors follow uncompressed, where the metadata does "
                   "not say); dcpp does not read that combination, nor does PyTorch's FileSystemReader");
        const std::shared_ptr<FileSource> view = sources.View(p.info, item);
        FileSource& src = *view;
        const uint64_t length = p.info.zstd ? src.Size() : p.info.length;
        if (IsSafetensorsBlob(src, p.info.ViewOffset())) {
          ResolveSafetensors(p, sources, src, item);
          continue;  // (safetensors records no checksums)
        }
        const torch_archive::StoredTensor t = torch_archive::ReadTensorItem(src, p.info.ViewOffset(), length, item);
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
          (*crcs)[i] = {p.info.View(), t.storage_file_offset, t.storage_bytes, t.storage_crc32, false,
                        StrCat("key '", p.fqn, "' chunk [", at, "] in ", where, "/", p.info.file,
                               p.info.zstd ? " (zstd-compressed item at byte " : " (item at byte ", p.info.offset, ")")};
        }
        if (t.contiguous()) {
          p.chunk->set_file(p.info.View());
          p.chunk->set_offset(nbytes == 0 ? t.storage_file_offset : t.data_offset());
        } else {
          p.chunk->set_file(StrCat(p.info.View(), kStrided, p.info.ViewOffset(), "+", length));
          p.chunk->set_offset(0);
        }
      }
    } catch (...) {
      next = pending.size();  // the other threads stop too
      throw;
    }
  };
  // A header read is cheap (a thread per 64 items); a compressed item is decompressed whole.
  const bool zstd = std::any_of(pending.begin(), pending.end(), [](const Pending& p) { return p.info.zstd; });
  const size_t per_thread = zstd ? 1 : 64;
  ParallelFor(std::max(1, std::min<int>(threads, static_cast<int>(pending.size() / per_thread) + 1)), work);
}

}  // namespace

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
      const StorageInfo& info = it->second;
      uint64_t length = info.length;
      if (info.zstd) {  // the blob is the decompressed view, whose size only decoding tells
        const std::string item = StrCat("bytes key '", fqn, "' in ", where, "/", info.file,
                                        " (zstd-compressed item at byte ", info.offset, ")");
        length = ItemSources(files).View(info, item)->Size();
      }
      proto::BytesMeta* b = out.add_bytes();
      b->set_fqn(fqn);
      b->set_file(info.View());
      b->set_offset(info.ViewOffset());
      b->set_length(length);
      max_rank = std::max(max_rank, RankOf(info.file));
      blob_crcs.push_back({info.View(), info.ViewOffset(), length, 0, true,
                           StrCat("bytes key '", fqn, "' in ", where, "/", info.file,
                                  info.zstd ? " (zstd-compressed item at byte " : " (item at byte ", info.offset, ")")});
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

}  // namespace dcpp
