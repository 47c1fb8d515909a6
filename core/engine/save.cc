// save(): local plan -> (gather) -> global plan on the coordinator -> (scatter) -> every rank
// writes its items -> (gather results) -> the coordinator commits the metadata.
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include "core/base/parallel.h"
#include "core/engine/chunk_writer.h"
#include "core/engine/engine_util.h"
#include "core/engine/plan_cache.h"
#include "core/engine/save_internal.h"
#include "core/engine/save_load.h"
#include "core/engine/staging.h"
#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/planner/planner.h"
#include "core/storage/open.h"

namespace dcpp {
namespace {

using internal::OnEveryRank;

// One thing this rank can write: a tensor chunk or a blob, found by its plan item's index.
struct Source {
  const TensorEntry* tensor = nullptr;
  const LocalChunk* chunk = nullptr;
  const std::string* bytes = nullptr;  // a blob's stored bytes
};

// `blobs` receives the bytes stored for each blob when the writer encodes them (it must not
// reallocate while `sources` point into it: it is reserved here).
proto::SavePlan LocalItems(const StateDict& sd, int rank, const StorageWriter& writer,
                           std::vector<Source>* sources, std::vector<std::string>* blobs) {
  proto::SavePlan plan;
  plan.set_rank(rank);
  for (const TensorEntry& e : sd.tensors()) {
    const std::string dtype = DtypeName(e.dtype);
    for (const LocalChunk& c : e.chunks) {
      DCPP_CHECK(c.tensor.defined() && !c.tensor.is_meta(), "key '", e.fqn, "' chunk ",
                 c.box.ToString(), " has no data to save");
      proto::PlanItem* it = plan.add_items();
      it->set_fqn(e.fqn);
      it->set_dtype(dtype);
      for (int64_t s : e.shape) it->add_shape(s);
      for (int64_t o : c.box.offsets) it->add_offsets(o);
      for (int64_t s : c.box.sizes) it->add_sizes(s);
      it->set_nbytes(static_cast<uint64_t>(c.box.numel() * ElementSize(e.dtype)));
      it->set_index(static_cast<int32_t>(sources->size()));
      sources->push_back({&e, &c, nullptr});
    }
  }
  blobs->reserve(sd.bytes().size());
  for (const BytesEntry& b : sd.bytes()) {
    const std::string* data = &b.data;
    if (writer.EncodesBytes()) {
      try {
        blobs->push_back(EncodeBlob(writer, b.data));
      } catch (const std::exception& e) {
        throw Error(StrCat("bytes key '", b.fqn, "': ", ErrorMessage(e)));
      }
      data = &blobs->back();
    }
    proto::PlanItem* it = plan.add_items();
    it->set_fqn(b.fqn);
    it->set_is_bytes(true);
    it->set_nbytes(data->size());
    it->set_index(static_cast<int32_t>(sources->size()));
    sources->push_back({nullptr, nullptr, data});
  }
  return plan;
}

std::string ItemKey(const proto::PlanItem& it) {
  std::string k = it.fqn() + (it.is_bytes() ? "|b|" : "|t|");
  for (int64_t o : it.offsets()) k += std::to_string(o) + ",";
  k += ":";
  for (int64_t s : it.sizes()) k += std::to_string(s) + ",";
  return k;
}

}  // namespace

namespace internal {

void PlaceItems(std::vector<proto::SavePlan>& global, const StorageWriter& writer) {
  for (proto::SavePlan& plan : global) {
    std::map<std::string, uint64_t> file_end;
    for (auto& it : *plan.mutable_items()) {
      uint64_t& end = file_end[it.file()];
      const ItemFrame frame = FrameOf(writer, it);
      // Items under a page in a format without framing are packed (docs/format.md: Alignment).
      const bool small = it.nbytes() < kChunkAlignment && frame.prefix == 0 && frame.suffix == 0;
      const uint64_t off = it.nbytes() || frame.prefix
                               ? AlignUp(end + frame.prefix, small ? kSmallChunkAlignment : kChunkAlignment)
                               : end;
      it.set_file_offset(off);
      end = off + it.nbytes() + frame.suffix;
    }
  }
}

void ValidateAndPlace(const std::vector<proto::SavePlan>& local, std::vector<proto::SavePlan>& global,
                      const std::vector<std::string>& committed, const std::string& planner,
                      const StorageWriter& writer) {
  const std::string where = "planner " + planner + " save_global";
  // Every key must agree on dtype and shape across ranks.
  std::map<std::string, const proto::PlanItem*> first;
  std::set<std::string> wanted;
  for (const auto& plan : local) {
    for (const auto& it : plan.items()) {
      auto [pos, inserted] = first.emplace(it.fqn(), &it);
      if (!inserted) {
        const proto::PlanItem& a = *pos->second;
        DCPP_CHECK(a.is_bytes() == it.is_bytes() && a.dtype() == it.dtype() &&
                       std::equal(a.shape().begin(), a.shape().end(), it.shape().begin(),
                                  it.shape().end()),
                   "key '", it.fqn(), "' differs between ranks (dtype, shape or kind)");
      }
      wanted.insert(ItemKey(it));
    }
  }
  std::set<std::string> written;
  std::map<std::string, int> file_rank;
  const std::set<std::string> old(committed.begin(), committed.end());
  for (size_t r = 0; r < global.size(); ++r) {
    for (auto& it : *global[r].mutable_items()) {
      DCPP_CHECK(written.insert(ItemKey(it)).second, where, ": key '", it.fqn(),
                 "' is written twice (the same chunk by two ranks or twice by one)");
      DCPP_CHECK(IsPlainFileName(it.file()), where, ": key '", it.fqn(), "' placed in '",
                 it.file(), "', which is not a plain file name");
      DCPP_CHECK(IsDataFileName(it.file()), where, ": key '", it.fqn(), "' placed in '", it.file(),
                 "', which is not a data file name (__<rank>_<n>.distcp; other names, such as "
                 ".metadata or a user's file, are never written)");
      DCPP_CHECK(!old.count(it.file()), where, ": file ", it.file(),
                 " belongs to the checkpoint already committed there; a new save must use new files");
      auto [pos, inserted] = file_rank.emplace(it.file(), static_cast<int>(r));
      DCPP_CHECK(inserted || pos->second == static_cast<int>(r), where, ": file ", it.file(),
                 " is given to ranks ", pos->second, " and ", r);
    }
  }
  PlaceItems(global, writer);
  for (const std::string& k : wanted) {
    DCPP_CHECK(written.count(k), where, ": dropped '", k.substr(0, k.find('|')),
               "' (the global step may deduplicate, not drop; drop keys in save_local)");
  }
  // Chunks of one tensor that overlap without being equal (equal ones are written once, or
  // refused above): the metadata would hold some elements twice, which every reader refuses.
  struct Written {
    std::vector<Box> boxes;
    std::vector<size_t> ranks;
    size_t dims = 0;
  };
  std::map<std::string, Written> chunks;
  for (size_t r = 0; r < global.size(); ++r) {
    for (const auto& it : global[r].items()) {
      if (it.is_bytes()) continue;
      Written& w = chunks[it.fqn()];
      w.boxes.push_back(Box{{it.offsets().begin(), it.offsets().end()}, {it.sizes().begin(), it.sizes().end()}});
      w.ranks.push_back(r);
      w.dims = static_cast<size_t>(it.shape_size());
    }
  }
  for (const auto& [fqn, w] : chunks) {
    const bool well_formed = std::all_of(w.boxes.begin(), w.boxes.end(), [&](const Box& b) {
      return b.offsets.size() == w.dims && b.sizes.size() == w.dims;
    });
    if (!well_formed) continue;  // (metadata validation names such a chunk)
    const auto pair = FirstOverlap(w.boxes, w.dims);
    if (!pair) continue;
    const Box& a = w.boxes[pair->first];
    const Box& b = w.boxes[pair->second];
    throw Error(StrCat(where, ": key '", fqn, "': rank ", w.ranks[pair->first], " writes chunk ", a.ToString(),
                       " and rank ", w.ranks[pair->second], " writes chunk ", b.ToString(), ", which overlap in ",
                       Intersect(a, b)->ToString(), " without being equal: every element must be stored once "
                       "(the ranks hold inconsistent shards of it)"));
  }
}

}  // namespace internal

namespace {

using internal::ChunkWriter;

// Writes this rank's items, one thread per group of files. Returns the chunk records.
proto::WriteResults WriteItems(const proto::SavePlan& mine, const std::vector<Source>& sources,
                               StorageWriter& writer, const SaveOptions& opt, SaveStats* stats,
                               std::vector<std::string>* created) {
  std::map<std::string, std::vector<const proto::PlanItem*>> by_file;
  for (const auto& it : mine.items()) by_file[it.file()].push_back(&it);
  std::vector<std::string> files;
  for (const auto& kv : by_file) files.push_back(kv.first);
  *created = files;

  const int threads = std::max(1, std::min<int>(opt.thread_count, static_cast<int>(files.size())));
  const bool hash = KeepsChunkChecksums(writer);  // (DCP's format keeps none: no XXH3 pass)
  std::vector<proto::WriteResults> results(threads);
  std::vector<int64_t> staged(threads, 0), staging_host(threads, 0);
  std::vector<std::function<void()>> jobs;
  for (int t = 0; t < threads; ++t) {
    jobs.push_back([&, t] {
      ChunkWriter cw(opt, hash);
      for (size_t f = t; f < files.size(); f += threads) {
        auto sink = writer.Open(files[f]);
        for (const proto::PlanItem* it : by_file[files[f]]) {
          const Source& src = sources.at(it->index());
          if (src.bytes != nullptr) {
            proto::BytesMeta* b = results[t].add_bytes();
            b->set_fqn(it->fqn());
            b->set_file(files[f]);
            b->set_offset(it->file_offset());
            b->set_length(src.bytes->size());
            b->set_checksum(cw.WriteBytes(*sink, it->file_offset(), *src.bytes));
            continue;
          }
          proto::TensorMeta* tm = results[t].add_tensors();
          tm->set_fqn(it->fqn());
          tm->set_dtype(it->dtype());
          *tm->mutable_shape() = it->shape();
          proto::ChunkMeta* c = tm->add_chunks();  // (elements of a repeated field stay put)
          *c->mutable_offsets() = it->offsets();
          *c->mutable_sizes() = it->sizes();
          c->set_file(files[f]);
          c->set_offset(it->file_offset());
          c->set_length(it->nbytes());
          cw.Write(*sink, it->file_offset(), src.chunk->tensor,
                   "key '" + it->fqn() + "' chunk " + src.chunk->box.ToString(),
                   [c](uint64_t checksum) { c->set_checksum(checksum); });
        }
        cw.Drain();
        sink->Finish();
      }
      staged[t] = cw.ring().staged_bytes();
      staging_host[t] = cw.ring().host_bytes();
    });
  }
  ParallelFor(static_cast<int>(jobs.size()), [&](int t) { jobs[t](); });
  proto::WriteResults all;
  for (auto& r : results) {
    for (auto& t : *r.mutable_tensors()) *all.add_tensors() = std::move(t);
    for (auto& b : *r.mutable_bytes()) *all.add_bytes() = std::move(b);
  }
  stats->items_written = mine.items_size();
  for (const auto& it : mine.items()) stats->bytes_written += static_cast<int64_t>(it.nbytes());
  stats->files = static_cast<int64_t>(files.size());
  for (int t = 0; t < threads; ++t) {
    stats->staged_bytes += staged[t];
    stats->staging_peak_bytes += staging_host[t];
  }
  return all;
}

}  // namespace

namespace internal {

proto::Metadata BuildMetadata(const std::vector<std::string>& results, const std::string& creator,
                              int world, const std::map<std::string, std::string>& data,
                              std::vector<std::string>* files) {
  proto::Metadata md;
  md.set_format_major(kFormatMajor);
  md.set_format_minor(kFormatMinor);
  md.set_creator(creator);
  md.set_world_size(world);
  md.set_checksum_algorithm(kChecksumAlgorithm);
  for (const auto& [k, v] : data) (*md.mutable_planner_data())[k] = v;
  std::map<std::string, proto::TensorMeta> tensors;
  std::set<std::string> file_set;
  for (const std::string& bytes : results) {
    proto::WriteResults r;
    DCPP_CHECK(r.ParseFromString(bytes), "corrupt write results from a rank");
    for (auto& t : *r.mutable_tensors()) {
      for (const auto& c : t.chunks()) file_set.insert(c.file());
      auto [pos, inserted] = tensors.try_emplace(t.fqn(), std::move(t));  // (moves only if new)
      if (!inserted) {
        for (auto& c : *t.mutable_chunks()) *pos->second.add_chunks() = std::move(c);
      }
    }
    for (auto& b : *r.mutable_bytes()) {
      file_set.insert(b.file());
      *md.add_bytes() = std::move(b);
    }
  }
  for (auto& [fqn, t] : tensors) {
    std::sort(t.mutable_chunks()->begin(), t.mutable_chunks()->end(),
              [](const proto::ChunkMeta& a, const proto::ChunkMeta& b) {
                return std::lexicographical_compare(a.offsets().begin(), a.offsets().end(),
                                                    b.offsets().begin(), b.offsets().end());
              });
    *md.add_tensors() = std::move(t);
  }
  files->assign(file_set.begin(), file_set.end());
  return md;
}

}  // namespace internal

namespace {

constexpr char kNothingCommitted[] = "; nothing was committed (the previous checkpoint is intact)";

// Runs a bare collective of step `step`; a failure says which step and that nothing was
// committed (before the write results travel, no commit can happen).
template <typename F>
auto Collective(const char* step, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    throw Error(StrCat(step, " failed: ", ErrorMessage(e), kNothingCommitted));
  }
}

// OnEveryRank for the steps before the write results travel.
template <typename F>
void BeforeCommit(Comm& comm, const char* step, F&& fn) {
  try {
    OnEveryRank(comm, step, std::forward<F>(fn));
  } catch (const std::exception& e) {
    throw Error(StrCat(ErrorMessage(e), kNothingCommitted));
  }
}

// The coordinator's word on the commit, as broadcast to every rank: 'C' then the warnings
// (committed), or 'F' then the error (not committed). Fields are separated by NUL.
std::string EncodeOutcome(bool committed, const std::vector<std::string>& lines) {
  std::string out(1, committed ? 'C' : 'F');
  for (const std::string& l : lines) out += l + '\0';
  return out;
}

std::vector<std::string> DecodeLines(const std::string& outcome) {
  std::vector<std::string> lines;
  size_t pos = 1;
  while (pos < outcome.size()) {
    const size_t end = outcome.find('\0', pos);
    lines.push_back(outcome.substr(pos, end - pos));
    pos = end == std::string::npos ? outcome.size() : end + 1;
  }
  return lines;
}

}  // namespace

SaveStats save(const StateDict& sd, StorageWriter& writer, const SaveOptions& opt) {
  LocalComm local;
  Comm& comm = opt.comm != nullptr ? *opt.comm : static_cast<Comm&>(local);
  const bool coordinator = comm.rank() == 0;
  const std::string where = writer.Describe();
  PlanContext ctx;
  ctx.rank = comm.rank();
  ctx.world_size = comm.size();
  ctx.thread_count = std::max(1, opt.thread_count);
  ctx.options = opt.planner_options;

  // The coordinator holds the destination (its lock) from Begin until the save ends.
  struct EndGuard {
    StorageWriter* writer;
    ~EndGuard() {
      if (writer != nullptr) writer->End();
    }
  } end_guard{coordinator ? &writer : nullptr};

  std::unique_ptr<SavePlanner> planner;
  std::vector<std::string> committed;
  BeforeCommit(comm, "save: prepare", [&] {
    planner = SavePlanner::Create(opt.planner, {opt.planner_instruction_limit,
                                                opt.planner_memory_limit});
    if (coordinator) {
      writer.Begin(opt.wait_for_lock);
      ctx.first_file_index = writer.FirstFreeFileIndex();
      committed = writer.CommittedFiles();
    }
  });
  ctx.first_file_index = std::stoi(
      Collective("save: prepare", [&] { return comm.Broadcast(std::to_string(ctx.first_file_index), 0); }));

  // Local step (every rank), then the global step on the coordinator, each skipped where the
  // plan cache (plan_cache.h) holds its answer for the same inputs.
  SaveStats stats;
  const auto plan_start = std::chrono::steady_clock::now();
  std::vector<Source> sources;
  std::vector<std::string> blobs;
  std::string local_bytes;
  internal::PlanKeys keys;
  BeforeCommit(comm, "save: local plan", [&] {
    if (opt.plan_caching) {
      keys = internal::MakePlanKeys(*planner, ctx, {opt.planner_instruction_limit, opt.planner_memory_limit}, writer);
    }
    local_bytes = internal::LocalPlanFor(LocalItems(sd, ctx.rank, writer, &sources, &blobs), *planner, ctx,
                                         keys.rank, &stats.local_plan_cached);
  });
  std::string message = stats.local_plan_cached ? internal::kPlanHash + internal::PlanHash(local_bytes)
                                                : internal::kPlanFull + local_bytes;
  std::map<std::string, std::string> planner_data;
  std::string answer;
  for (int round = 0;; ++round) {  // a second round only when the coordinator asks for full plans
    stats.plan_bytes_sent += static_cast<int64_t>(message.size());
    const std::vector<std::string> gathered = Collective("save: local plan", [&] { return comm.Gather(message, 0); });
    std::vector<std::string> scattered(comm.size());
    BeforeCommit(comm, "save: global plan", [&] {
      if (!coordinator) return;
      stats.plan_bytes_gathered += internal::PlanGlobally(gathered, keys.global, *planner, ctx, committed, writer,
                                                          &scattered, &planner_data);
    });
    answer = Collective("save: global plan", [&] { return comm.Scatter(scattered, 0); });
    DCPP_CHECK(!answer.empty(), "save: empty global plan from rank 0", kNothingCommitted);
    if (answer[0] != internal::kResend) break;
    DCPP_CHECK(round == 0, "save: rank 0 asked twice for the local plans", kNothingCommitted);
    message = internal::kPlanFull + local_bytes;
  }
  stats.plan_cached = answer[0] == internal::kGlobalCached;

  // Every rank writes its items; on any failure every rank removes what it wrote. A rank
  // sends its write results only when every rank wrote everything, and the coordinator
  // commits only with every rank's results: a rank that failed here never sees a commit.
  std::vector<std::string> created;
  std::string results;
  try {
    BeforeCommit(comm, "save: write", [&] {
      const proto::SavePlan mine = internal::ReadAnswer(answer, writer);
      stats.plan_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - plan_start).count();
      if (auto* framer = As<ItemFramer>(writer)) framer->Placed(mine);
      WriteItems(mine, sources, writer, opt, &stats, &created).SerializeToString(&results);
    });
  } catch (...) {
    writer.Abort(created);
    throw;
  }

  // From here on the outcome is decided by the coordinator's rename alone. A rank removes its
  // files only when it knows that the commit did not happen; a rank that cannot learn the
  // outcome leaves them (the next save removes them if they turn out to be debris).
  const std::string unknown = StrCat("; the folder ", where,
                                     " holds either the previous or the new checkpoint, both valid");
  std::vector<std::string> all_results;
  try {
    all_results = comm.Gather(results, 0);
  } catch (const std::exception& e) {
    if (coordinator) {
      writer.Abort(created);
      throw Error(StrCat("save: gathering the write results failed: ", ErrorMessage(e),
                         "; nothing was committed (the previous checkpoint in ", where, " is intact)"));
    }
    throw Error(StrCat("save: commit state unknown: sending the write results to rank 0 failed (",
                       ErrorMessage(e), ")", unknown));
  }
  std::string outcome;
  if (coordinator) {
    try {
      std::vector<std::string> files;
      const proto::Metadata md =
          internal::BuildMetadata(all_results, opt.creator, comm.size(), planner_data, &files);
      outcome = EncodeOutcome(true, writer.Commit(SerializeMetadata(md), files).warnings);
    } catch (const std::exception& e) {
      outcome = EncodeOutcome(false, {ErrorMessage(e)});
    }
  }
  try {
    outcome = comm.Broadcast(outcome, 0);
  } catch (const std::exception& e) {
    if (!coordinator) {
      throw Error(StrCat("save: commit state unknown: rank 0 unreachable (", ErrorMessage(e), ")", unknown));
    }
    if (outcome[0] == 'C') {
      throw Error(StrCat("save: the new checkpoint in ", where, " is committed, but telling the other ranks failed: ",
                         ErrorMessage(e)));
    }
    writer.Abort(created);
    throw Error(StrCat("save: commit failed: ", DecodeLines(outcome).at(0), " (and telling the other ranks failed: ",
                       ErrorMessage(e), ")"));
  }
  DCPP_CHECK(!outcome.empty() && (outcome[0] == 'C' || outcome[0] == 'F'), "save: commit state unknown: rank 0 sent a malformed outcome", unknown);
  if (outcome[0] == 'F') {
    writer.Abort(created);
    const std::string why = DecodeLines(outcome).empty() ? "" : DecodeLines(outcome)[0];
    throw Error(StrCat("save: commit failed: ", comm.size() > 1 ? "rank 0: " : "", why));
  }
  stats.warnings = DecodeLines(outcome);
  return stats;
}

SaveStats save(const StateDict& sd, StorageWriter&& writer, const SaveOptions& opt) {
  return save(sd, writer, opt);
}

SaveStats save(const StateDict& sd, const std::string& dir, const SaveOptions& opt) {
  return save(sd, *OpenWriter(dir, opt.format), opt);
}

}  // namespace dcpp
