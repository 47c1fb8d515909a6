#include "core/tools/convert.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <set>
#include <thread>

#include "core/base/error.h"
#include "core/engine/band_reader.h"
#include "core/engine/chunk_io.h"
#include "core/engine/save_internal.h"
#include "core/format/checksum.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/model/layout.h"
#include "core/planner/planner.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/native/filesystem.h"
#include "core/tools/convert_pipeline.h"
#include "core/tools/dtype_cast.h"

namespace dcpp {
namespace {

using internal::EntryStreamer;
using internal::Output;
using internal::Pipeline;
using internal::WriteJobs;

int64_t Product(const std::vector<int64_t>& v, size_t from) {
  int64_t n = 1;
  for (size_t d = from; d < v.size(); ++d) n *= v[d];
  return n;
}

std::string Describe(const proto::TensorMeta& t) {
  std::vector<std::vector<int64_t>> offsets, sizes;
  for (const auto& c : t.chunks()) {
    offsets.emplace_back(c.offsets().begin(), c.offsets().end());
    sizes.emplace_back(c.sizes().begin(), c.sizes().end());
  }
  return DescribeChunking({t.shape().begin(), t.shape().end()}, offsets, sizes);
}

}  // namespace

std::string DescribeChunking(const std::vector<int64_t>& shape,
                             const std::vector<std::vector<int64_t>>& offsets,
                             const std::vector<std::vector<int64_t>>& sizes) {
  std::set<Box> boxes;
  for (size_t i = 0; i < offsets.size(); ++i) {
    Box b{offsets[i], sizes[i]};
    if (!b.empty() || shape.empty()) boxes.insert(b);
  }
  if (boxes.empty()) return "empty";
  if (boxes.size() == 1 && *boxes.begin() == WholeBox(shape)) return "whole";
  std::vector<int> split;
  std::vector<int64_t> parts;
  int64_t grid = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    std::set<int64_t> at;
    for (const Box& b : boxes) at.insert(b.offsets[d]);
    if (at.size() > 1) {
      split.push_back(static_cast<int>(d));
      parts.push_back(static_cast<int64_t>(at.size()));
      grid *= static_cast<int64_t>(at.size());
    }
  }
  if (split.empty() || split.size() > 2 || grid != static_cast<int64_t>(boxes.size())) {
    return StrCat(boxes.size(), " chunks");
  }
  Layout l;
  for (size_t k = 0; k < split.size(); ++k) {
    l.mesh.push_back(parts[k]);
    l.placements.push_back(Placement::Shard(split[k]));
  }
  return l.ToString();
}

namespace {

// A warning for a blob that is a torch.save'd object whose pickle names unsafe globals
// (torch_archive::UnsafeGlobals); blobs over 64 MiB are not read for this.
void UnsafeBlobWarning(StorageReader& src, const proto::BytesMeta& b, const std::string& key,
                       std::vector<std::string>* warnings) {
  if (b.length() == 0 || b.length() > (64u << 20)) return;  // (a zero-length blob's file need not exist)
  const std::string what = StrCat("bytes key '", b.fqn(), "' in ", src.Describe(), "/", b.file());
  std::string data(b.length(), '\0');
  src.Open(b.file())->ReadAt(b.offset(), data.data(), data.size());
  if (!torch_archive::IsTorchSaveArchive(data)) return;
  std::string names;
  try {
    for (const std::string& g : torch_archive::UnsafeGlobals(data, what)) names += (names.empty() ? "" : ", ") + g;
  } catch (const Error& e) {
    warnings->push_back(StrCat(what, ": its pickle cannot be checked for unsafe globals (", e.what(),
                               "); carried over as it is"));
    return;
  }
  if (names.empty()) return;
  warnings->push_back(StrCat(what, ": its pickle names ", names, ", outside the globals a state dict "
                             "uses; carried over as it is to '", key, "' (dcpp never runs it, but PyTorch's "
                             "dcp.load would import and call it)"));
}

}  // namespace

ConvertStats convert(StorageReader& src, StorageWriter& dst, const ConvertOptions& opt) {
  DCPP_CHECK(opt.world_size >= 1, "convert: the target world size must be at least 1 (got ",
             opt.world_size, ")");
  DCPP_CHECK(opt.memory_budget >= kMinConvertMemoryBudget, "convert: the memory budget must be at least ",
             kMinConvertMemoryBudget, " bytes (got ", opt.memory_budget, ")");
  // (A DCP source then checks each item's CRC-32 as it streams through.)
  VerifyOwnChecksums(src, opt.verify_checksums);
  const proto::Metadata md = ParseMetadata(src.ReadMetadata(), src.Describe());
  RefuseUncheckedNative(src, md, opt.verify_checksums, "convert");
  const PlannerLimits limits{opt.planner_instruction_limit, opt.planner_memory_limit};
  auto planner = ConvertPlanner::Create(opt.planner, limits);
  PlanContext ctx;
  ctx.world_size = opt.world_size;
  ctx.options = planner->Options(opt.planner_options);
  std::vector<int64_t> mesh;
  const std::vector<ConvertEntry> entries = planner->Plan(ctx, md, &mesh);
  ctx.mesh = mesh;

  std::map<std::string, const proto::TensorMeta*> tensors;
  for (const auto& t : md.tensors()) tensors[t.fqn()] = &t;
  std::map<std::string, const proto::BytesMeta*> blobs;
  for (const auto& b : md.bytes()) blobs[b.fqn()] = &b;
  std::vector<proto::TensorMeta> blob_tensors(entries.size());
  // A destination that stores blobs its own way (DCP: as torch.save'd objects) gets each blob
  // read whole and encoded up front; blobs are small.
  std::vector<std::string> encoded(entries.size());
  // The dtype each tensor entry is written in (ConvertOptions::dtype_casts).
  const DtypeCasts casts = DtypeCasts::Parse(opt.dtype_casts);
  std::vector<std::string> out_dtype(entries.size());
  std::vector<bool> is_encoded(entries.size(), false);

  ConvertStats stats;
  stats.mesh = mesh;
  stats.source_world_size = md.world_size();
  std::set<std::string> used;
  for (size_t i = 0; i < entries.size(); ++i) {
    const ConvertEntry& e = entries[i];
    used.insert(e.source);
    ConvertedKey k;
    k.key = e.key;
    k.source = e.source;
    k.is_bytes = e.is_bytes;
    if (e.is_bytes) {
      blob_tensors[i] = BlobAsTensor(*blobs.at(e.source));
      k.bytes = static_cast<int64_t>(blobs.at(e.source)->length());
      k.source_layout = k.target_layout = "bytes";
    } else {
      const proto::TensorMeta& t = *tensors.at(e.source);
      k.dtype = t.dtype();
      k.target_dtype = out_dtype[i] = casts.Target(e.key, t.dtype());
      k.shape.assign(t.shape().begin(), t.shape().end());
      k.bytes = Product(k.shape, 0) * ElementSize(DtypeFromName(t.dtype()));
      k.source_layout = Describe(t);
      k.target_layout = e.layout.ToString();
    }
    stats.keys.push_back(std::move(k));
  }
  for (const auto& t : md.tensors()) {
    if (!used.count(t.fqn())) stats.dropped.push_back(t.fqn());
  }
  for (const auto& b : md.bytes()) {
    if (!used.count(b.fqn())) stats.dropped.push_back(b.fqn());
  }
  for (const ConvertEntry& e : entries) {
    if (e.is_bytes) UnsafeBlobWarning(src, *blobs.at(e.source), e.key, &stats.warnings);
  }

  // Every target rank's chunks, as the local plans of a save.
  const int world = opt.world_size;
  std::vector<proto::SavePlan> local(world);
  std::vector<std::vector<std::pair<size_t, Box>>> targets(world);  // per rank, per item index
  for (int r = 0; r < world; ++r) {
    local[r].set_rank(r);
    for (size_t i = 0; i < entries.size(); ++i) {
      const ConvertEntry& e = entries[i];
      proto::PlanItem* it = local[r].add_items();
      it->set_fqn(e.key);
      it->set_index(static_cast<int32_t>(targets[r].size()));
      if (e.is_bytes) {
        it->set_is_bytes(true);
        if (dst.EncodesBytes() && !is_encoded[i]) {
          const proto::BytesMeta& b = *blobs.at(e.source);
          std::unique_ptr<FileSource> file;
          const auto open = [&]() -> FileSource& { return *(file = src.Open(b.file())); };
          encoded[i] = EncodeBlob(dst, ReadBlob(open, src, b, HasChecksums(md) && opt.verify_checksums));
          is_encoded[i] = true;
        }
        it->set_nbytes(is_encoded[i] ? encoded[i].size() : blobs.at(e.source)->length());
        targets[r].emplace_back(i, WholeBox({blob_tensors[i].shape(0)}));
        continue;
      }
      const proto::TensorMeta& t = *tensors.at(e.source);
      const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
      Box box;
      try {
        box = BoxForRank(shape, e.layout, r);
      } catch (const Error& err) {
        throw Error(StrCat("planner ", planner->script_name(), ": key '", e.key, "': ", err.what()));
      }
      it->set_dtype(out_dtype[i]);
      for (int64_t s : shape) it->add_shape(s);
      for (int64_t o : box.offsets) it->add_offsets(o);
      for (int64_t s : box.sizes) it->add_sizes(s);
      it->set_nbytes(static_cast<uint64_t>(box.numel() * ElementSize(DtypeFromName(out_dtype[i]))));
      targets[r].emplace_back(i, box);
    }
  }

  // The destination is this conversion's from here until it returns (its lock).
  struct EndGuard {
    StorageWriter& dst;
    ~EndGuard() { dst.End(); }
  } end_guard{dst};
  dst.Begin(opt.wait_for_lock);
  DCPP_CHECK(opt.overwrite || !dst.HasCommitted(), "destination ", dst.Describe(),
             " already holds a checkpoint; pass --overwrite to replace it (it stays intact "
             "until the new one commits)");

  // Placement: the conversion script's save_global, or the default save planner's.
  ctx.first_file_index = dst.FirstFreeFileIndex();
  const std::vector<std::string> committed = dst.CommittedFiles();
  auto placer = planner->has_save_global()
                    ? SavePlanner::FromSource(planner->script_name(), planner->script_source(), limits)
                    : SavePlanner::Create("", limits);
  std::map<std::string, std::string> planner_data;
  std::vector<proto::SavePlan> global = placer->Global(ctx, local, &planner_data);
  internal::ValidateAndPlace(local, global, committed, placer->script_name(), dst);
  if (auto* framer = As<ItemFramer>(dst)) {
    for (const proto::SavePlan& plan : global) framer->Placed(plan);
  }

  std::vector<std::unique_ptr<Output>> outputs;
  const bool hash = KeepsChunkChecksums(dst);  // (DCP's format keeps none: no XXH3 pass)
  std::vector<std::vector<Output*>> by_entry(entries.size());
  std::map<std::string, std::unique_ptr<FileSink>> sinks;
  std::vector<std::string> created;
  int64_t total = 0;
  try {
    for (int r = 0; r < world; ++r) {
      for (const proto::PlanItem& it : global[r].items()) {
        const auto& [entry, box] = targets[r].at(it.index());
        auto o = std::make_unique<Output>();
        o->entry = entry;
        o->rank = r;
        o->box = box;
        const int64_t es = entries[entry].is_bytes ? 1 : ElementSize(DtypeFromName(out_dtype[entry]));
        o->bytes = ByteBox(box, es);
        o->row_bytes = Product(o->bytes.sizes, 1);
        const proto::TensorMeta& src_meta =
            entries[entry].is_bytes ? blob_tensors[entry] : *tensors.at(entries[entry].source);
        o->whole_rows = o->row_bytes ==
                        Product(ByteShape({src_meta.shape().begin(), src_meta.shape().end()}, es), 1);
        o->file = it.file();
        o->file_offset = it.file_offset();
        o->length = static_cast<int64_t>(it.nbytes());
        if (o->length == 0 && hash) o->checksum = Checksum::Of(nullptr, 0);
        auto& sink = sinks[it.file()];
        if (!sink) {
          created.push_back(it.file());
          sink = dst.Open(it.file());
        }
        o->sink = sink.get();
        if (is_encoded[entry]) {  // written below, whole
          outputs.push_back(std::move(o));
          continue;
        }
        total += o->length;
        by_entry[entry].push_back(o.get());
        outputs.push_back(std::move(o));
      }
    }

    // Stream: this thread reads and copies into one half of the budget while the writer
    // thread hashes and writes the other half.
    SourceFiles files(src);
    Pipeline pipe(opt.memory_budget / 2);
    std::exception_ptr write_error;
    std::thread writer([&] {
      try {
        WriteJobs(pipe, total, opt, hash, &stats.bytes_written);
      } catch (...) {
        write_error = std::current_exception();
        pipe.Fail();
      }
    });
    std::exception_ptr read_error;
    ConvertOptions read_opt = opt;  // formats without checksums (DCP, safetensors) skip them
    read_opt.verify_checksums = opt.verify_checksums && HasChecksums(md);
    EntryStreamer streamer(pipe, files, read_opt);
    try {
      for (size_t i = 0; i < entries.size(); ++i) {
        const proto::TensorMeta& source =
            entries[i].is_bytes ? blob_tensors[i] : *tensors.at(entries[i].source);
        streamer.Stream(entries[i].key, source, entries[i].is_bytes ? source.dtype() : out_dtype[i], by_entry[i]);
      }
      streamer.Flush();
      pipe.Close();
    } catch (const Pipeline::Stopped&) {
      // the writer failed; its error is rethrown below
    } catch (...) {
      read_error = std::current_exception();
      pipe.Fail();
    }
    writer.join();
    if (read_error) std::rethrow_exception(read_error);
    if (write_error) std::rethrow_exception(write_error);
    stats.bytes_read = streamer.bytes_read();
    stats.chunks_verified = streamer.verified();
    stats.peak_buffer_bytes = pipe.peak();
    for (const auto& o : outputs) {
      if (!is_encoded[o->entry]) continue;
      const std::string& data = encoded[o->entry];
      WriteHashed(*o->sink, o->file_offset, data.data(), static_cast<int64_t>(data.size()), hash ? &o->sum : nullptr);
      o->written = o->length;
      if (hash) o->checksum = o->sum.Digest();
      stats.bytes_written += o->length;
    }
    for (auto& [name, sink] : sinks) sink->Finish();
    stats.files = static_cast<int64_t>(sinks.size());

    proto::WriteResults results;
    for (const auto& o : outputs) {
      const ConvertEntry& e = entries[o->entry];
      DCPP_CHECK(o->written == o->length, "key '", e.key, "': wrote ", o->written, " of ",
                 o->length, " bytes of chunk ", o->box.ToString());
      if (e.is_bytes) {
        proto::BytesMeta* b = results.add_bytes();
        b->set_fqn(e.key);
        b->set_file(o->file);
        b->set_offset(o->file_offset);
        b->set_length(static_cast<uint64_t>(o->length));
        b->set_checksum(o->checksum);
        continue;
      }
      const proto::TensorMeta& t = *tensors.at(e.source);
      proto::TensorMeta* tm = results.add_tensors();
      tm->set_fqn(e.key);
      tm->set_dtype(out_dtype[o->entry]);
      *tm->mutable_shape() = t.shape();
      proto::ChunkMeta* c = tm->add_chunks();
      for (int64_t v : o->box.offsets) c->add_offsets(v);
      for (int64_t v : o->box.sizes) c->add_sizes(v);
      c->set_file(o->file);
      c->set_offset(o->file_offset);
      c->set_length(static_cast<uint64_t>(o->length));
      c->set_checksum(o->checksum);
    }
    planner_data["convert.planner"] = planner->script_name();
    // DCP's key paths travel along (a writer in DCP's format uses those of the keys kept).
    auto paths = md.planner_data().find("dcp.paths");
    if (paths != md.planner_data().end()) planner_data[paths->first] = paths->second;
    std::vector<std::string> keep;
    proto::Metadata out = internal::BuildMetadata({results.SerializeAsString()}, opt.creator, world,
                                                  planner_data, &keep);
    for (int64_t m : mesh) out.add_mesh_shape(m);
    // The last step: Commit throws only when the commit did not happen.
    for (std::string& w : dst.Commit(SerializeMetadata(out), keep).warnings) stats.warnings.push_back(std::move(w));
  } catch (...) {
    sinks.clear();
    dst.Abort(created);
    throw;
  }
  return stats;
}

ConvertStats convert(const std::string& src_dir, const std::string& dst_dir,
                     const ConvertOptions& opt) {
  return convert(*OpenReader(src_dir), *OpenWriter(dst_dir, opt.format), opt);
}

}  // namespace dcpp
