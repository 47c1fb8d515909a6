// load(): read metadata -> each rank plans its reads (Lua: key remapping and sources; C++:
// overlaps and validation) -> every rank reads the byte ranges it needs and copies them into
// its tensors. No data moves between ranks, except regions that the planner's optional
// load_broadcast has one rank read for all and broadcast (read once, broadcast).
#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/base/parallel.h"
#include "core/engine/chunk_io.h"
#include "core/engine/chunk_reader.h"
#include "core/engine/engine_util.h"
#include "core/engine/save_load.h"
#include "core/engine/staging.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/planner/planner.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/open.h"

namespace dcpp {
namespace {

using internal::ChunkReader;
using internal::Counters;
using internal::OnEveryRank;
using internal::Piece;
using internal::Unit;

struct Plan {
  std::vector<Unit> units;
  std::vector<std::pair<BytesEntry*, const proto::BytesMeta*>> blobs;
  std::vector<LocalChunk*> to_allocate;
  std::vector<c10::ScalarType> allocate_dtype;
  int64_t bytes_needed = 0;
  // The tensor targets that load (as load_broadcast sees them) and their chunks.
  std::vector<LoadWant> wants;
  std::vector<LocalChunk*> want_chunks;
};

Plan MakePlan(StateDict& sd, const proto::Metadata& md, const LoadOptions& opt,
              LoadPlanner& planner, const PlanContext& ctx, const std::string& where) {
  std::vector<LoadTarget> targets;
  std::vector<std::pair<TensorEntry*, LocalChunk*>> tensor_of;  // per target
  std::vector<BytesEntry*> bytes_of;
  for (TensorEntry& e : sd.tensors()) {
    const std::string dtype = DtypeName(e.dtype);
    for (LocalChunk& c : e.chunks) {
      targets.push_back({e.fqn, false, dtype, e.shape, c.box});
      tensor_of.emplace_back(&e, &c);
      bytes_of.push_back(nullptr);
    }
  }
  for (BytesEntry& b : sd.bytes()) {
    targets.push_back({b.fqn, true, "", {}, {}});
    tensor_of.emplace_back(nullptr, nullptr);
    bytes_of.push_back(&b);
  }
  std::vector<int> missing;
  const std::vector<LoadRead> reads = planner.Local(ctx, targets, md, &missing);
  const std::string who = "planner " + planner.script_name() + " load_local";

  if (!missing.empty() && !opt.allow_partial_load) {
    std::string names;
    std::set<std::string> seen;
    for (int m : missing) {
      if (seen.insert(targets[m].fqn).second && seen.size() <= 5) names += " '" + targets[m].fqn + "'";
    }
    throw Error(StrCat("checkpoint ", where, " has no key", names,
                       seen.size() > 5 ? StrCat(" (and ", seen.size() - 5, " more)") : "",
                       "; pass allow_partial_load to load the rest"));
  }

  std::map<std::string, const proto::TensorMeta*> tensors;
  for (const auto& t : md.tensors()) tensors[t.fqn()] = &t;
  std::map<std::string, const proto::BytesMeta*> blobs;
  for (const auto& b : md.bytes()) blobs[b.fqn()] = &b;

  Plan plan;
  std::map<std::pair<const proto::TensorMeta*, int>, size_t> unit_of;
  std::vector<int64_t> covered(targets.size(), 0);
  std::vector<std::set<int>> chunks_of(targets.size());
  std::vector<std::string> key_of(targets.size());  // the first saved key feeding each target
  std::vector<bool> has_key(targets.size(), false);  // (a key may be "")
  for (const LoadRead& r : reads) {
    const LoadTarget& t = targets[r.target];
    if (t.is_bytes) {
      auto it = blobs.find(r.key);
      DCPP_CHECK(it != blobs.end(), who, ": bytes key '", t.fqn, "' reads '", r.key,
                 "', which checkpoint ", where, " does not have as bytes");
      plan.blobs.emplace_back(bytes_of[r.target], it->second);
      plan.bytes_needed += static_cast<int64_t>(it->second->length());
      covered[r.target] = 1;
      continue;
    }
    auto it = tensors.find(r.key);
    DCPP_CHECK(it != tensors.end(), who, ": key '", t.fqn, "' reads '", r.key,
               "', which checkpoint ", where, " does not have as a tensor");
    const proto::TensorMeta& m = *it->second;
    DCPP_CHECK(m.dtype() == t.dtype, "key '", t.fqn, "': dtype mismatch: checkpoint ", where,
               " has ", m.dtype(), " for '", r.key, "', the target is ", t.dtype);
    DCPP_CHECK(std::equal(m.shape().begin(), m.shape().end(), t.shape.begin(), t.shape.end()),
               "key '", t.fqn, "': shape mismatch: checkpoint ", where, " has ",
               WholeBox({m.shape().begin(), m.shape().end()}).ToString(), ", the target is ",
               WholeBox(t.shape).ToString());
    DCPP_CHECK(r.chunk >= 0 && r.chunk < m.chunks_size(), who, ": key '", t.fqn,
               "' reads chunk ", r.chunk + 1, " of '", r.key, "', which has ", m.chunks_size());
    const Box saved = ChunkBox(m.chunks(r.chunk));
    const auto overlap = Intersect(saved, t.box);
    if (!overlap) continue;  // nothing to copy; harmless
    if (!has_key[r.target]) {
      key_of[r.target] = r.key;
      has_key[r.target] = true;
    }
    if (!chunks_of[r.target].insert(r.chunk).second) continue;
    covered[r.target] += overlap->numel();
    auto [pos, inserted] = unit_of.emplace(std::make_pair(&m, r.chunk), plan.units.size());
    if (inserted) plan.units.push_back({&m, &m.chunks(r.chunk), saved, {}});
    plan.units[pos->second].pieces.push_back({tensor_of[r.target].second, *overlap});
    plan.bytes_needed += overlap->numel() * ElementSize(tensor_of[r.target].first->dtype);
  }
  const std::set<int> missing_set(missing.begin(), missing.end());
  for (size_t i = 0; i < targets.size(); ++i) {
    if (missing_set.count(static_cast<int>(i))) continue;
    if (targets[i].is_bytes) {
      DCPP_CHECK(covered[i] > 0, who, ": bytes key '", targets[i].fqn, "' has no source");
      continue;
    }
    DCPP_CHECK(covered[i] >= targets[i].box.numel(), "key '", targets[i].fqn, "': checkpoint ",
               where, " covers only ", covered[i], " of the ", targets[i].box.numel(),
               " elements of chunk ", targets[i].box.ToString());
    LocalChunk* c = tensor_of[i].second;
    if (!c->tensor.defined() || c->tensor.is_meta()) {
      plan.to_allocate.push_back(c);
      plan.allocate_dtype.push_back(tensor_of[i].first->dtype);
    }
    plan.wants.push_back({targets[i].fqn, key_of[i], targets[i].dtype, targets[i].shape,
                          targets[i].box,
                          targets[i].box.numel() * ElementSize(tensor_of[i].first->dtype)});
    plan.want_chunks.push_back(c);
  }
  return plan;
}

void Execute(Plan& plan, StorageReader& reader, const LoadOptions& opt, Counters& counters) {
  for (size_t i = 0; i < plan.to_allocate.size(); ++i) {
    LocalChunk* c = plan.to_allocate[i];
    c->tensor = at::empty(c->box.sizes,
                          at::TensorOptions().dtype(plan.allocate_dtype[i]).device(opt.allocate_device));
  }
  // Spread the chunks over the threads by bytes, largest first.
  std::vector<const Unit*> order;
  for (const Unit& u : plan.units) order.push_back(&u);
  std::sort(order.begin(), order.end(),
            [](const Unit* a, const Unit* b) { return a->chunk->length() > b->chunk->length(); });
  const int threads = std::max(1, std::min<int>(opt.thread_count, static_cast<int>(order.size())));
  std::vector<std::vector<const Unit*>> share(threads);
  std::vector<uint64_t> load(threads, 0);
  for (const Unit* u : order) {
    const size_t t = std::min_element(load.begin(), load.end()) - load.begin();
    share[t].push_back(u);
    load[t] += u->chunk->length();
  }
  std::vector<std::function<void()>> jobs;
  for (int t = 0; t < threads; ++t) {
    jobs.push_back([&, t] {
      ChunkReader cr(reader, opt, counters);
      for (const Unit* u : share[t]) {
        try {
          cr.Read(*u);
        } catch (const std::exception&) {
          RethrowForChunk(u->meta->fqn(), u->box);
        }
      }
      cr.Drain();
      counters.staged += cr.ring().staged_bytes();
      counters.staging_host += cr.ring().host_bytes();
    });
  }
  ParallelFor(static_cast<int>(jobs.size()), [&](int t) { jobs[t](); });
  std::map<std::string, std::unique_ptr<FileSource>> sources;
  for (auto& [entry, meta] : plan.blobs) {
    const std::string& file = meta->file();
    entry->data = ReadBlob(
        [&]() -> FileSource& {
          auto& src = sources[file];
          if (!src) src = reader.Open(file);
          return *src;
        },
        reader, *meta, opt.verify_checksums);
    counters.bytes_read += static_cast<int64_t>(entry->data.size());
    counters.read_calls += entry->data.empty() ? 0 : 1;
    if (opt.verify_checksums) counters.verified += 1;
  }
}

// ---- Read once, broadcast (the planner's optional load_broadcast) ----

// What travels between ranks for it: proto::LoadWants and proto::BroadcastGroups.
std::string PackWants(const std::vector<LoadWant>& wants) {
  proto::LoadWants msg;
  for (const LoadWant& w : wants) {
    proto::LoadWants::Want* m = msg.add_wants();
    m->set_fqn(w.fqn);
    m->set_key(w.key);
    m->set_dtype(w.dtype);
    m->mutable_shape()->Add(w.shape.begin(), w.shape.end());
    m->mutable_offsets()->Add(w.box.offsets.begin(), w.box.offsets.end());
    m->mutable_sizes()->Add(w.box.sizes.begin(), w.box.sizes.end());
    m->set_nbytes(w.nbytes);
  }
  return msg.SerializeAsString();
}

std::vector<LoadWant> UnpackWants(const std::string& s) {
  proto::LoadWants msg;
  DCPP_CHECK(msg.ParseFromString(s), "load: malformed broadcast plan message");
  std::vector<LoadWant> wants;
  for (const auto& m : msg.wants()) {
    wants.push_back({m.fqn(), m.key(), m.dtype(), {m.shape().begin(), m.shape().end()},
                     Box{{m.offsets().begin(), m.offsets().end()}, {m.sizes().begin(), m.sizes().end()}},
                     m.nbytes()});
  }
  return wants;
}

std::string PackGroups(const std::vector<BroadcastGroup>& groups) {
  proto::BroadcastGroups msg;
  for (const BroadcastGroup& g : groups) {
    proto::BroadcastGroups::Group* m = msg.add_groups();
    m->set_fqn(g.fqn);
    m->mutable_offsets()->Add(g.box.offsets.begin(), g.box.offsets.end());
    m->mutable_sizes()->Add(g.box.sizes.begin(), g.box.sizes.end());
    m->set_root(g.root);
  }
  return msg.SerializeAsString();
}

std::vector<BroadcastGroup> UnpackGroups(const std::string& s) {
  proto::BroadcastGroups msg;
  DCPP_CHECK(msg.ParseFromString(s), "load: malformed broadcast plan message");
  std::vector<BroadcastGroup> groups;
  for (const auto& m : msg.groups()) {
    groups.push_back({m.fqn(),
                      Box{{m.offsets().begin(), m.offsets().end()}, {m.sizes().begin(), m.sizes().end()}},
                      m.root()});
  }
  return groups;
}

// Every rank's tensor targets gathered on the coordinator, which runs load_broadcast (errors
// raise on every rank); every rank gets the groups, packed.
std::string PlanBroadcasts(Comm& comm, LoadPlanner& planner, const PlanContext& ctx,
                           const proto::Metadata& md, const Plan& plan) {
  const std::vector<std::string> all = comm.Gather(PackWants(plan.wants), 0);
  std::string packed;
  OnEveryRank(comm, "load", [&] {
    if (comm.rank() != 0) return;
    std::vector<std::vector<LoadWant>> wanted;
    wanted.reserve(all.size());
    for (const std::string& w : all) wanted.push_back(UnpackWants(w));
    packed = PackGroups(planner.Broadcast(ctx, wanted, md));
  });
  return comm.Broadcast(packed, 0);
}

// This rank's part in one group: the chunk the region is broadcast into, and (off the root)
// further target chunks with the same box, filled from it afterwards.
struct Receive {
  std::string fqn;
  Box box;
  int root = 0;
  LocalChunk* chunk = nullptr;
  std::vector<LocalChunk*> copies;
};

// Finds each group's target chunks; off the root, leaves them out of the reads (they are
// still allocated).
std::vector<Receive> ApplyBroadcasts(Plan& plan, const std::string& packed, int rank) {
  const std::vector<BroadcastGroup> groups = UnpackGroups(packed);
  if (groups.empty()) return {};
  std::map<std::pair<std::string, Box>, std::vector<LocalChunk*>> chunks;
  for (size_t i = 0; i < plan.wants.size(); ++i) {
    chunks[{plan.wants[i].fqn, plan.wants[i].box}].push_back(plan.want_chunks[i]);
  }
  std::vector<Receive> out;
  std::set<const LocalChunk*> skip;
  for (const BroadcastGroup& g : groups) {
    auto it = chunks.find({g.fqn, g.box});
    DCPP_CHECK(it != chunks.end(), "load: key '", g.fqn, "' ", g.box.ToString(),
               " is broadcast, but this rank has no such target chunk");
    Receive r{g.fqn, g.box, g.root, it->second[0], {}};
    if (rank != g.root) {
      r.copies.assign(it->second.begin() + 1, it->second.end());
      skip.insert(it->second.begin(), it->second.end());
    }
    out.push_back(std::move(r));
  }
  if (!skip.empty()) {
    for (Unit& u : plan.units) {
      u.pieces.erase(std::remove_if(u.pieces.begin(), u.pieces.end(),
                                    [&](const Piece& p) { return skip.count(p.target) > 0; }),
                     u.pieces.end());
    }
    plan.units.erase(std::remove_if(plan.units.begin(), plan.units.end(),
                                    [](const Unit& u) { return u.pieces.empty(); }),
                     plan.units.end());
  }
  return out;
}

// After the reads, on every rank in group order: each region from its root (which read it)
// to the others. Returns the bytes received (sent, on a root).
int64_t RunBroadcasts(Comm& comm, const std::vector<Receive>& receives) {
  int64_t bytes = 0;
  for (const Receive& r : receives) {
    at::Tensor t = internal::ViewOf(r.chunk->tensor, r.chunk->box, r.box);
    try {
      comm.BroadcastTensor(t, r.root);
    } catch (const std::exception& e) {
      throw Error(StrCat("load: broadcast of key '", r.fqn, "' ", r.box.ToString(), " from rank ",
                         r.root, " failed: ", ErrorMessage(e)));
    }
    for (LocalChunk* c : r.copies) internal::ViewOf(c->tensor, c->box, r.box).copy_(t);
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return bytes;
}

}  // namespace

LoadStats load(StateDict& sd, StorageReader& reader, const LoadOptions& opt) {
  LocalComm local;
  Comm& comm = opt.comm != nullptr ? *opt.comm : static_cast<Comm&>(local);
  PlanContext ctx;
  ctx.rank = comm.rank();
  ctx.world_size = comm.size();
  ctx.thread_count = std::max(1, opt.thread_count);
  ctx.allow_partial_load = opt.allow_partial_load;
  ctx.options = opt.planner_options;
  ctx.comm_device = comm.device_type();

  // (A DCP reader then checks each item's CRC-32 where a whole item is read, if asked: it costs
  // more than the read.)
  VerifyOwnChecksums(reader, opt.verify_checksums && opt.verify_dcp_crc32);
  // The coordinator reads the metadata once; every rank gets the same bytes.
  std::string md_bytes;
  OnEveryRank(comm, "load: read metadata", [&] {
    if (comm.rank() == 0) md_bytes = reader.ReadMetadata();
  });
  md_bytes = comm.Broadcast(md_bytes, 0);

  Counters counters;
  LoadStats stats;
  proto::Metadata md;
  LoadOptions eff = opt;  // formats without checksums (DCP, safetensors) are read unverified
  std::unique_ptr<LoadPlanner> planner;
  Plan plan;
  // With several ranks, a planner with load_broadcast first picks regions that one rank reads
  // for all (the others leave them out of their reads and receive them by broadcast).
  auto broadcasting = [&] { return comm.size() > 1 && planner->has_broadcast(); };
  OnEveryRank(comm, "load", [&] {
    md = ParseMetadata(md_bytes, reader.Describe());
    RefuseUncheckedNative(reader, md, opt.verify_checksums, "load");
    ctx.mesh.assign(md.mesh_shape().begin(), md.mesh_shape().end());
    eff.verify_checksums = opt.verify_checksums && HasChecksums(md);
    if (opt.gpudirect && eff.verify_checksums) {
      counters.Note("checksum verification is on (GPUDirect reads skip host memory, where "
                    "checksums are computed): set verify_checksums = false to use it");
    }
    planner = LoadPlanner::Create(opt.planner, {opt.planner_instruction_limit,
                                                opt.planner_memory_limit});
    plan = MakePlan(sd, md, eff, *planner, ctx, reader.Describe());
    stats.bytes_needed = plan.bytes_needed;
    if (!broadcasting()) Execute(plan, reader, eff, counters);
  });
  if (broadcasting()) {
    const std::string groups = PlanBroadcasts(comm, *planner, ctx, md, plan);
    std::vector<Receive> receives;
    OnEveryRank(comm, "load", [&] {
      receives = ApplyBroadcasts(plan, groups, comm.rank());
      Execute(plan, reader, eff, counters);
    });
    stats.broadcast_bytes = RunBroadcasts(comm, receives);
  }
  stats.bytes_read = counters.bytes_read;
  stats.read_calls = counters.read_calls;
  stats.checksums_verified = counters.verified;
  stats.staged_bytes = counters.staged;
  stats.staging_peak_bytes = counters.staging_host;
  stats.gpudirect_bytes = counters.gpudirect;
  stats.gpudirect_note = counters.gpudirect_note;
  stats.direct_io_note = counters.direct_io_note;
  return stats;
}

LoadStats load(StateDict& sd, StorageReader&& reader, const LoadOptions& opt) {
  return load(sd, reader, opt);
}

LoadStats load(StateDict& sd, const std::string& dir, const LoadOptions& opt) {
  return load(sd, *OpenReader(dir), opt);
}

}  // namespace dcpp
