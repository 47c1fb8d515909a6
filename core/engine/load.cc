// load(): read metadata -> each rank plans its reads (Lua: key remapping and sources; C++:
// overlaps and validation) -> every rank reads the byte ranges it needs and copies them into
// its tensors. No data moves between ranks, except regions that the planner's optional
// load_broadcast has one rank read for all and broadcast (read once, broadcast).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "core/base/parallel.h"
#include "core/engine/engine_util.h"
#include "core/engine/save_load.h"
#include "core/engine/staging.h"
#include "core/format/checksum.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/planner/planner.h"
#include "core/storage/gds/gds.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/open.h"

namespace dcpp {
namespace {

using internal::OnEveryRank;
using internal::ViewOf;

// A target region fed by one saved chunk.
struct Piece {
  LocalChunk* target;
  Box overlap;  // global coordinates
};

// Everything read from one saved chunk.
struct Unit {
  const proto::TensorMeta* meta;
  const proto::ChunkMeta* chunk;
  Box box;
  std::vector<Piece> pieces;
};

struct Counters {
  std::atomic<int64_t> bytes_read{0}, read_calls{0}, verified{0}, staged{0}, staging_host{0};
  std::atomic<int64_t> gpudirect{0};
  std::mutex mu;
  std::string gpudirect_note;  // the first reason GPUDirect was not used

  void Note(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (gpudirect_note.empty()) gpudirect_note = why;
  }
};

class ChunkReader {
 public:
  ChunkReader(StorageReader& reader, const LoadOptions& opt, Counters& counters)
      : reader_(reader), opt_(opt), counters_(counters),
        ring_(opt.staging_bytes, opt.staging_buffers) {}

  // Completes the copies still in flight out of the staging ring.
  void Drain() { ring_.Drain(); }
  const StagingRing& ring() const { return ring_; }

  void Read(const Unit& u) {
    FileSource& src = Source(u.chunk->file());
    const int64_t es = ElementSize(DtypeFromName(u.meta->dtype()));
    // Distinct overlaps (replicated targets may ask for the same region twice).
    std::set<Box> distinct;
    int64_t covered = 0;
    for (const Piece& p : u.pieces) {
      if (distinct.insert(p.overlap).second) covered += p.overlap.numel();
    }
    if (covered >= u.box.numel()) {
      ReadWhole(u, src, es);
    } else {
      for (const Piece& p : u.pieces) ReadPart(u, p, src, es);
    }
  }

 private:
  FileSource& Source(const std::string& file) {
    auto& s = sources_[file];
    if (!s) s = reader_.Open(file);
    return *s;
  }

  void Pread(FileSource& src, uint64_t off, void* dst, int64_t n) {
    if (n == 0) return;
    src.ReadAt(off, dst, static_cast<size_t>(n));
    counters_.bytes_read += n;
    counters_.read_calls += 1;
  }

  // GPUDirect Storage: the whole chunk from its file straight into `dst`. False (and a note)
  // where it is off or unavailable; the caller then stages.
  bool ReadToGpu(const Unit& u, const at::Tensor& dst) {
    if (!opt_.gpudirect || opt_.verify_checksums) return false;
    auto it = gds_files_.find(u.chunk->file());
    if (it == gds_files_.end()) {
      const std::string path = LocalPathOf(reader_, u.chunk->file());
      std::string why;
      std::unique_ptr<GdsFile> file;
      if (path.empty()) {
        why = StrCat(reader_.Describe(), "/", u.chunk->file(), " is not a plain local file");
      } else {
        file = GdsFile::Open(path, &why);
      }
      if (!file) counters_.Note(why);
      it = gds_files_.emplace(u.chunk->file(), std::move(file)).first;
    }
    if (!it->second) return false;
    if (!gpu_ordered_) {
      // cuFile writes outside any stream: let the kernels already queued on the target finish.
      c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(dst.device()).synchronize();
      gpu_ordered_ = true;
    }
    c10::DeviceGuard guard(dst.device());
    const int64_t n = static_cast<int64_t>(u.chunk->length());
    it->second->Read(dst.mutable_data_ptr(), static_cast<size_t>(n), u.chunk->offset());
    counters_.bytes_read += n;
    counters_.read_calls += 1;
    counters_.gpudirect += n;
    return true;
  }

  // Whether any target of `u` is on a CUDA device (its staging buffers are then pinned).
  static bool ToCuda(const Unit& u) {
    return std::any_of(u.pieces.begin(), u.pieces.end(),
                       [](const Piece& p) { return p.target->tensor.is_cuda(); });
  }

  void CheckSum(const Unit& u, uint64_t got) {
    if (!opt_.verify_checksums) return;
    DCPP_CHECK(got == u.chunk->checksum(), "checksum mismatch for key '", u.meta->fqn(),
               "' chunk ", u.box.ToString(), " in ", reader_.Describe(), "/", u.chunk->file(),
               " (bytes ", u.chunk->offset(), "..", u.chunk->offset() + u.chunk->length(),
               "): the data file is corrupt");
    counters_.verified += 1;
  }

  // The whole chunk is needed: read it once, sequentially, verifying its checksum, and copy
  // each block into every target that overlaps it.
  void ReadWhole(const Unit& u, FileSource& src, int64_t es) {
    const c10::ScalarType dtype = DtypeFromName(u.meta->dtype());
    const int64_t nbytes = static_cast<int64_t>(u.chunk->length());
    if (u.pieces.size() == 1 && u.pieces[0].overlap == u.box) {
      at::Tensor dst = ViewOf(u.pieces[0].target->tensor, u.pieces[0].target->box, u.box);
      if (dst.device().is_cpu() && dst.is_contiguous()) {  // straight into the target
        // Read in blocks and hash each one while it is in cache: one pass over memory.
        char* p = static_cast<char*>(dst.mutable_data_ptr());
        Checksum sum;
        for (int64_t off = 0; off < nbytes; off += kIoBlockBytes) {
          const int64_t len = std::min(kIoBlockBytes, nbytes - off);
          Pread(src, u.chunk->offset() + static_cast<uint64_t>(off), p + off, len);
          if (opt_.verify_checksums) sum.Update(p + off, static_cast<size_t>(len));
        }
        CheckSum(u, sum.Digest());
        return;
      }
      if (dst.is_cuda() && dst.is_contiguous() && ReadToGpu(u, dst)) return;
    }
    // Through the staging ring: the read of block k+1 overlaps the copies out of block k.
    Checksum sum;
    const bool pinned = ToCuda(u);
    for (const Block& b : SplitRowMajor(u.box, es, ring_.block_bytes())) {
      const int64_t bytes = b.box.numel() * es;
      const StagingRing::Buffer buf = ring_.Acquire(bytes, pinned);
      Pread(src, u.chunk->offset() + static_cast<uint64_t>(b.byte_offset), buf.data, bytes);
      if (opt_.verify_checksums) sum.Update(buf.data, static_cast<size_t>(bytes));
      const at::Tensor staged = ring_.View(buf, 0, dtype, b.box.sizes);
      std::vector<std::pair<at::Tensor, at::Tensor>> copies;
      for (const Piece& p : u.pieces) {
        const auto part = Intersect(b.box, p.overlap);
        if (part) copies.emplace_back(ViewOf(p.target->tensor, p.target->box, *part), ViewOf(staged, b.box, *part));
      }
      ring_.Scatter(buf, copies);
    }
    CheckSum(u, sum.Digest());
  }

  // Only part of the chunk is needed: read just the byte runs of the overlap (coalesced when
  // the gaps are small), in blocks bounded by the staging budget.
  void ReadPart(const Unit& u, const Piece& p, FileSource& src, int64_t es) {
    const c10::ScalarType dtype = DtypeFromName(u.meta->dtype());
    for (const Block& blk : SplitRowMajor(p.overlap, es, ring_.block_bytes())) {
      const Box& block = blk.box;
      const int64_t block_bytes = block.numel() * es;
      at::Tensor dst = ViewOf(p.target->tensor, p.target->box, block);
      const bool direct = dst.device().is_cpu() && dst.is_contiguous();
      StagingRing::Buffer buf;
      if (!direct) buf = ring_.Acquire(block_bytes, dst.is_cuda());
      uint8_t* out = direct ? static_cast<uint8_t*>(dst.mutable_data_ptr()) : buf.data;
      const std::vector<ByteRun> runs = RunsOf(u.box, block, es);
      const std::vector<ByteRun> reads = CoalesceRuns(runs, 4096);
      size_t ri = 0;
      int64_t pos = 0;  // bytes of `out` filled
      for (const ByteRun& rd : reads) {
        if (ri < runs.size() && runs[ri].offset == rd.offset && runs[ri].length == rd.length) {
          Pread(src, u.chunk->offset() + rd.offset, out + pos, rd.length);
          pos += rd.length;
          ++ri;
          continue;
        }
        // A coalesced read spanning several runs and the gaps between them.
        if (scratch_.size() < static_cast<size_t>(rd.length)) scratch_.resize(rd.length);
        Pread(src, u.chunk->offset() + rd.offset, scratch_.data(), rd.length);
        while (ri < runs.size() && runs[ri].offset < rd.offset + rd.length) {
          std::memcpy(out + pos, scratch_.data() + (runs[ri].offset - rd.offset), runs[ri].length);
          pos += runs[ri].length;
          ++ri;
        }
      }
      if (!direct) ring_.Scatter(buf, {{dst, ring_.View(buf, 0, dtype, block.sizes)}});
    }
  }

  StorageReader& reader_;
  const LoadOptions& opt_;
  Counters& counters_;
  std::map<std::string, std::unique_ptr<FileSource>> sources_;
  StagingRing ring_;
  std::map<std::string, std::unique_ptr<GdsFile>> gds_files_;  // null: staged instead
  bool gpu_ordered_ = false;
  std::vector<uint8_t> scratch_;
};

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
    if (key_of[r.target].empty()) key_of[r.target] = r.key;
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
        } catch (const std::exception& e) {
          const std::string msg = ErrorMessage(e);
          // Messages from the reader name the key already; others get it added.
          if (msg.find("'" + u->meta->fqn() + "'") != std::string::npos) throw;
          throw Error(StrCat("key '", u->meta->fqn(), "' chunk ", u->box.ToString(), ": ", msg));
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
    auto& src = sources[meta->file()];
    if (!src) src = reader.Open(meta->file());
    std::string data(meta->length(), '\0');
    src->ReadAt(meta->offset(), data.data(), data.size());
    counters.bytes_read += static_cast<int64_t>(data.size());
    counters.read_calls += 1;
    if (opt.verify_checksums) {
      DCPP_CHECK(Checksum::Of(data.data(), data.size()) == meta->checksum(),
                 "checksum mismatch for bytes key '", meta->fqn(), "' in ", reader.Describe(),
                 "/", meta->file(), ": the data file is corrupt");
      counters.verified += 1;
    }
    entry->data = std::move(data);
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
  return stats;
}

LoadStats load(StateDict& sd, StorageReader&& reader, const LoadOptions& opt) {
  return load(sd, reader, opt);
}

LoadStats load(StateDict& sd, const std::string& dir, const LoadOptions& opt) {
  return load(sd, *OpenReader(dir), opt);
}

}  // namespace dcpp
