// planning: the Lua planners at scale, simulated without processes or data.
//
// For R ranks in {64, 128, 256, 512, 1024} it builds synthetic local save plans (one
// proto::SavePlan per rank, fields filled as core/engine/save.cc's LocalItems does) holding ~100,000
// items across all ranks, so items per rank shrink as R grows:
//   - 5/8 of the tensors are 2-D and sharded: rank r holds its Shard(0) box of each
//     (dcpp::BoxForRank with Layout::Sharded(R, 0));
//   - 1/8 are 1-D and sharded the same way;
//   - 1/4 are replicated (2-D and 1-D): every rank holds the identical whole box, which the
//     global step must deduplicate (one writer each);
//   - two bytes items per rank: "step" (the same on every rank, deduplicated) and "rng.<r>".
// Then it times, on one thread:
//   (a) SavePlanner::Local for every rank, summed (the ranks would run it in parallel; the sum
//       is the single-core cost);
//   (b) SavePlanner::Global over all R plans (ctx.world_size = R, ctx.thread_count = 2);
//   (c) building the proto::Metadata from the global plan (one ChunkMeta per written item,
//       4 KiB-aligned offsets per file, chunks sorted as the engine does) and
//       LoadPlanner::Local for ONE rank's targets against that full metadata (every rank plans
//       its own reads in parallel in reality). The targets are that rank's boxes under a
//       different layout: Shard(1) for 2-D tensors, the whole tensor for the 1-D sharded ones,
//       Shard(0) for the 1-D replicated ones, plus its two bytes items. A 2-D or 1-D target of
//       a sharded tensor overlaps all R saved chunks, so a rank plans ~R reads per tensor.
// The planners are created once (SavePlanner::Create / LoadPlanner::Create are timed too and
// counted in the total). Outside the timings, the benchmark checks the global plan (every
// distinct (fqn, box) written exactly once, by a rank that holds it, nothing dropped, no file
// shared by two ranks) and the load plan (every target covered exactly by its reads, nothing
// missing), so it cannot pass on a broken planner.
//
//   bazel run -c opt //bench:planning [-- --items=100000 --reps=3]
//
// Figures (each R: the rep with the smallest total, over --reps):
//   planning_1024_total_s        (a) + (b) + (c) + planner creation at R = 1024, in seconds.
//                                This one is an absolute time, on purpose: the target is < 2 s
//                                on this 2-core machine (the planning of a 1024-rank save and
//                                one rank's load must not dominate a checkpoint).
//   planning_us_per_item_1024    that total / save-side items across all ranks, microseconds
//   planning_us_per_item_64      the same at R = 64
//   planning_growth_64_to_1024   per-item time at 1024 / per-item time at 64 (1 = linear in
//                                items, independent of R)
//   plan_cached_vs_first         repeated saves with plan caching at R = 1024 (see RunCached):
//                                the second save's planning cost / the first's; target <= 0.05.
//                                The median over --reps; plan_cached_gather_bytes_vs_first: the
//                                bytes the plan gather carries, second / first
//   planning_peak_instructions_per_call  the most Lua instructions one planner call ran (any R),
//                                and planning_peak_lua_mib the most memory a planner's Lua
//                                state held: what the PlannerLimits defaults are measured against
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench/bench_util.h"
#include "core/base/error.h"
#include "core/engine/plan_cache.h"
#include "core/engine/save_internal.h"
#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/model/layout.h"
#include "core/planner/planner.h"
#include "core/storage/native/filesystem.h"

namespace {

using namespace dcpp_bench;

constexpr int kRankCounts[] = {64, 128, 256, 512, 1024};
constexpr int kBytesPerRank = 2;  // "step" (shared) and "rng.<r>"
constexpr uint64_t kAlign = 4096;

enum class Kind { kSharded2d, kSharded1d, kReplicated2d, kReplicated1d };

struct TensorSpec {
  std::string fqn;
  Kind kind;
  std::vector<int64_t> shape;
};

Kind KindOf(int i) {
  switch (i % 8) {
    case 5: return Kind::kSharded1d;
    case 6: return Kind::kReplicated2d;
    case 7: return Kind::kReplicated1d;
    default: return Kind::kSharded2d;
  }
}

bool Sharded(Kind k) { return k == Kind::kSharded2d || k == Kind::kSharded1d; }

// Tensor shapes large enough that Shard(0) and Shard(1) over 1024 ranks leave no empty box.
std::vector<TensorSpec> MakeSpecs(int tensors) {
  std::vector<TensorSpec> specs;
  for (int i = 0; i < tensors; ++i) {
    const Kind k = KindOf(i);
    const int64_t rows = 4096 * (1 + i % 4);
    TensorSpec s{"layers." + std::to_string(i / 8) + ".p" + std::to_string(i % 8), k, {}};
    if (k == Kind::kSharded2d || k == Kind::kReplicated2d) {
      s.shape = {rows, 2048};
    } else {
      s.shape = {rows};
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

void SetBox(dcpp::proto::PlanItem* it, const dcpp::Box& b) {
  for (int64_t o : b.offsets) it->add_offsets(o);
  for (int64_t s : b.sizes) it->add_sizes(s);
}

// Rank r's local plan, laid out as core/engine/save.cc's LocalItems lays it out: tensors in state-dict
// order, then bytes; `index` is the 0-based position.
dcpp::proto::SavePlan LocalPlan(const std::vector<TensorSpec>& specs, int world, int rank) {
  dcpp::proto::SavePlan plan;
  plan.set_rank(rank);
  const dcpp::Layout rows = dcpp::Layout::Sharded(world, 0);
  for (const TensorSpec& s : specs) {
    const dcpp::Box box = Sharded(s.kind) ? dcpp::BoxForRank(s.shape, rows, rank) : dcpp::WholeBox(s.shape);
    dcpp::proto::PlanItem* it = plan.add_items();
    it->set_fqn(s.fqn);
    it->set_dtype("float32");
    for (int64_t d : s.shape) it->add_shape(d);
    SetBox(it, box);
    it->set_nbytes(static_cast<uint64_t>(box.numel() * 4));
    it->set_index(plan.items_size() - 1);
  }
  const std::pair<std::string, uint64_t> blobs[kBytesPerRank] = {{"step", 8},
                                                                 {"rng." + std::to_string(rank), 5056}};
  for (const auto& [fqn, n] : blobs) {
    dcpp::proto::PlanItem* it = plan.add_items();
    it->set_fqn(fqn);
    it->set_is_bytes(true);
    it->set_nbytes(n);
    it->set_index(plan.items_size() - 1);
  }
  return plan;
}

std::string ItemKey(const dcpp::proto::PlanItem& it) {
  std::string k = it.fqn() + (it.is_bytes() ? "|b|" : "|t|");
  for (int64_t o : it.offsets()) k += std::to_string(o) + ",";
  k += ":";
  for (int64_t s : it.sizes()) k += std::to_string(s) + ",";
  return k;
}

bool SameBox(const dcpp::proto::PlanItem& a, const dcpp::proto::PlanItem& b) {
  return std::equal(a.offsets().begin(), a.offsets().end(), b.offsets().begin(), b.offsets().end()) &&
         std::equal(a.sizes().begin(), a.sizes().end(), b.sizes().begin(), b.sizes().end());
}

// Throws unless the global plan writes every distinct (fqn, box) of the local plans exactly
// once, by a rank that holds it, each file written by one rank only. Returns the writer
// balance, for information: the busiest writer's bytes over a lower bound on what any
// assignment must give its busiest writer: the larger of the mean bytes per rank, the bytes a
// rank alone holds (which it must write) and, for each item several ranks hold, its bytes plus
// the least any of its holders must write anyway.
double CheckGlobal(const std::vector<dcpp::proto::SavePlan>& local,
                   const std::vector<dcpp::proto::SavePlan>& global) {
  DCPP_CHECK(global.size() == local.size(), "global plan has ", global.size(), " ranks, not ", local.size());
  struct Held {
    double nbytes = 0;
    std::vector<size_t> ranks;
  };
  std::unordered_map<std::string, Held> wanted;
  for (size_t r = 0; r < local.size(); ++r) {
    for (const auto& it : local[r].items()) {
      Held& h = wanted[ItemKey(it)];
      h.nbytes = static_cast<double>(it.nbytes());
      h.ranks.push_back(r);
    }
  }
  std::vector<double> forced(local.size(), 0);
  double total = 0;
  for (const auto& [key, h] : wanted) {
    if (h.ranks.size() == 1) forced[h.ranks[0]] += h.nbytes;
    total += h.nbytes;
  }
  double bound = std::max(total / static_cast<double>(local.size()), *std::max_element(forced.begin(), forced.end()));
  for (const auto& [key, h] : wanted) {
    if (h.ranks.size() < 2) continue;
    double least = 1e300;
    for (size_t r : h.ranks) least = std::min(least, forced[r]);
    bound = std::max(bound, least + h.nbytes);
  }

  std::unordered_set<std::string> written;
  std::unordered_map<std::string, size_t> file_rank;
  double busiest = 0;
  for (size_t r = 0; r < global.size(); ++r) {
    double bytes = 0;
    for (const auto& it : global[r].items()) {
      DCPP_CHECK(it.index() >= 0 && it.index() < local[r].items_size(), "rank ", r, ": bad index ", it.index());
      const auto& src = local[r].items(it.index());
      DCPP_CHECK(src.fqn() == it.fqn() && src.is_bytes() == it.is_bytes() && SameBox(src, it), "rank ", r,
                 ": item ", it.index(), " ('", it.fqn(), "') is not what the rank holds");
      DCPP_CHECK(!it.file().empty(), "rank ", r, ": '", it.fqn(), "' has no file");
      DCPP_CHECK(written.insert(ItemKey(it)).second, "'", ItemKey(it), "' is written twice");
      auto [pos, inserted] = file_rank.emplace(it.file(), r);
      DCPP_CHECK(inserted || pos->second == r, "file ", it.file(), " given to ranks ", pos->second, " and ", r);
      bytes += static_cast<double>(it.nbytes());
    }
    busiest = std::max(busiest, bytes);
  }
  DCPP_CHECK(written.size() == wanted.size(), "wrote ", written.size(), " distinct items, the ranks hold ",
             wanted.size());
  for (const std::string& k : written) DCPP_CHECK(wanted.count(k), "wrote '", k, "', which no rank holds");
  return busiest / bound;
}

// The metadata a save with this global plan commits: per file, items at 4 KiB-aligned offsets
// in plan order; per tensor, chunks sorted by offsets (as core/engine/save.cc's BuildMetadata does).
dcpp::proto::Metadata BuildMetadata(const std::vector<dcpp::proto::SavePlan>& global, int world) {
  dcpp::proto::Metadata md;
  md.set_format_major(1);
  md.set_world_size(world);
  md.set_checksum_algorithm("xxh3_64");
  std::unordered_map<std::string, int> tensor_of;
  for (const auto& plan : global) {
    std::unordered_map<std::string, uint64_t> file_end;
    for (const auto& it : plan.items()) {
      uint64_t& end = file_end[it.file()];
      const uint64_t off = (end + kAlign - 1) / kAlign * kAlign;
      end = off + it.nbytes();
      const uint64_t checksum = off * 0x9E3779B97F4A7C15ull ^ it.nbytes();
      if (it.is_bytes()) {
        dcpp::proto::BytesMeta* b = md.add_bytes();
        b->set_fqn(it.fqn());
        b->set_file(it.file());
        b->set_offset(off);
        b->set_length(it.nbytes());
        b->set_checksum(checksum);
        continue;
      }
      auto [pos, inserted] = tensor_of.emplace(it.fqn(), md.tensors_size());
      dcpp::proto::TensorMeta* t = inserted ? md.add_tensors() : md.mutable_tensors(pos->second);
      if (inserted) {
        t->set_fqn(it.fqn());
        t->set_dtype(it.dtype());
        *t->mutable_shape() = it.shape();
      }
      dcpp::proto::ChunkMeta* c = t->add_chunks();
      *c->mutable_offsets() = it.offsets();
      *c->mutable_sizes() = it.sizes();
      c->set_file(it.file());
      c->set_offset(off);
      c->set_length(it.nbytes());
      c->set_checksum(checksum);
    }
  }
  for (auto& t : *md.mutable_tensors()) {
    std::sort(t.mutable_chunks()->begin(), t.mutable_chunks()->end(),
              [](const dcpp::proto::ChunkMeta& a, const dcpp::proto::ChunkMeta& b) {
                return std::lexicographical_compare(a.offsets().begin(), a.offsets().end(),
                                                    b.offsets().begin(), b.offsets().end());
              });
  }
  return md;
}

// Rank `rank`'s load targets under the other layouts (see the top of the file).
std::vector<dcpp::LoadTarget> LoadTargets(const std::vector<TensorSpec>& specs, int world, int rank) {
  std::vector<dcpp::LoadTarget> targets;
  for (const TensorSpec& s : specs) {
    dcpp::Box box;
    switch (s.kind) {
      case Kind::kSharded2d:
      case Kind::kReplicated2d: box = dcpp::BoxForRank(s.shape, dcpp::Layout::Sharded(world, 1), rank); break;
      case Kind::kSharded1d: box = dcpp::WholeBox(s.shape); break;
      case Kind::kReplicated1d: box = dcpp::BoxForRank(s.shape, dcpp::Layout::Sharded(world, 0), rank); break;
    }
    targets.push_back({s.fqn, false, "float32", s.shape, box});
  }
  targets.push_back({"step", true, "", {}, {}});
  targets.push_back({"rng." + std::to_string(rank), true, "", {}, {}});
  return targets;
}

// Throws unless the reads cover every target exactly (the saved chunks of a key are disjoint,
// so the overlaps of the chunks read must add up to the target's volume).
void CheckLoad(const std::vector<dcpp::LoadTarget>& targets, const dcpp::proto::Metadata& md,
               const std::vector<dcpp::LoadRead>& reads, const std::vector<int>& missing) {
  DCPP_CHECK(missing.empty(), missing.size(), " targets missing, e.g. '", targets[missing[0]].fqn, "'");
  std::unordered_map<std::string, const dcpp::proto::TensorMeta*> tensors;
  for (const auto& t : md.tensors()) tensors[t.fqn()] = &t;
  std::vector<int64_t> covered(targets.size(), 0);
  std::set<std::pair<int, int>> seen;
  for (const dcpp::LoadRead& r : reads) {
    DCPP_CHECK(r.target >= 0 && r.target < static_cast<int>(targets.size()), "read of target ", r.target);
    const dcpp::LoadTarget& t = targets[r.target];
    DCPP_CHECK(r.key == t.fqn, "target '", t.fqn, "' reads key '", r.key, "'");
    DCPP_CHECK(seen.insert({r.target, r.chunk}).second, "target '", t.fqn, "' reads chunk ", r.chunk, " twice");
    if (t.is_bytes) {
      covered[r.target] = 1;
      continue;
    }
    const auto* m = tensors.at(r.key);
    DCPP_CHECK(r.chunk >= 0 && r.chunk < m->chunks_size(), "'", t.fqn, "': chunk ", r.chunk);
    const auto& c = m->chunks(r.chunk);
    const dcpp::Box saved{{c.offsets().begin(), c.offsets().end()}, {c.sizes().begin(), c.sizes().end()}};
    const auto inter = dcpp::Intersect(saved, t.box);
    DCPP_CHECK(inter.has_value(), "'", t.fqn, "' reads chunk ", saved.ToString(), ", which misses ",
               t.box.ToString());
    covered[r.target] += inter->numel();
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const int64_t want = targets[i].is_bytes ? 1 : targets[i].box.numel();
    DCPP_CHECK(covered[i] == want, "target '", targets[i].fqn, "' covered ", covered[i], " of ", want);
  }
}

struct Result {
  int world = 0;
  int64_t items = 0;        // save-side items over all ranks
  int64_t written = 0;      // items in the global plan (after dedup)
  int64_t chunks = 0;       // chunks in the metadata
  int64_t targets = 0;      // load targets of the one rank
  int64_t reads = 0;        // reads it plans
  double create_s = 0;      // SavePlanner::Create + LoadPlanner::Create
  double local_s = 0;       // (a), summed over ranks
  double local_max_s = 0;   // (a), slowest rank
  double global_s = 0;      // (b)
  double metadata_s = 0;    // (c) metadata
  double load_s = 0;        // (c) load plan
  double check_s = 0;       // untimed validation (for information)
  double balance = 0;       // busiest writer's bytes / a lower bound (see CheckGlobal)
  int64_t peak_instructions = 0;  // most Lua instructions of one planner call (save or load)
  int64_t peak_lua_bytes = 0;     // most bytes a planner's Lua state held
  double total() const { return create_s + local_s + global_s + metadata_s + load_s; }
  double us_per_item() const { return total() * 1e6 / static_cast<double>(items); }
};

Result RunOnce(int world, int total_items, bool check) {
  Result res;
  res.world = world;
  const int per_rank = std::max(kBytesPerRank + 8, total_items / world);
  const std::vector<TensorSpec> specs = MakeSpecs(per_rank - kBytesPerRank);
  std::vector<dcpp::proto::SavePlan> plans;
  plans.reserve(world);
  for (int r = 0; r < world; ++r) plans.push_back(LocalPlan(specs, world, r));
  for (const auto& p : plans) res.items += p.items_size();

  std::unique_ptr<dcpp::SavePlanner> saver;
  std::unique_ptr<dcpp::LoadPlanner> loader;
  res.create_s = Time([&] {
    saver = dcpp::SavePlanner::Create();
    loader = dcpp::LoadPlanner::Create();
  });

  // (a) every rank's local step.
  std::vector<dcpp::proto::SavePlan> kept(world);
  for (int r = 0; r < world; ++r) {
    dcpp::PlanContext ctx;
    ctx.rank = r;
    ctx.world_size = world;
    ctx.thread_count = 2;
    const double t = Time([&] { kept[r] = saver->Local(ctx, plans[r]); });
    res.local_s += t;
    res.local_max_s = std::max(res.local_max_s, t);
  }
  // (b) the coordinator's global step.
  std::vector<dcpp::proto::SavePlan> global;
  std::map<std::string, std::string> data;
  dcpp::PlanContext gctx;
  gctx.world_size = world;
  gctx.thread_count = 2;
  res.global_s = Time([&] { global = saver->Global(gctx, kept, &data); });
  for (const auto& p : global) res.written += p.items_size();

  // (c) the metadata, then one rank's load plan against all of it.
  dcpp::proto::Metadata md;
  res.metadata_s = Time([&] { md = BuildMetadata(global, world); });
  for (const auto& t : md.tensors()) res.chunks += t.chunks_size();
  const int reader = world / 2 + 1;  // any rank; not 0, whose boxes start at the origin
  const std::vector<dcpp::LoadTarget> targets = LoadTargets(specs, world, reader);
  res.targets = static_cast<int64_t>(targets.size());
  std::vector<dcpp::LoadRead> reads;
  std::vector<int> missing;
  dcpp::PlanContext lctx;
  lctx.rank = reader;
  lctx.world_size = world;
  lctx.thread_count = 2;
  res.load_s = Time([&] { reads = loader->Local(lctx, targets, md, &missing); });
  res.reads = static_cast<int64_t>(reads.size());
  res.peak_instructions = std::max(saver->peak_instructions(), loader->peak_instructions());
  res.peak_lua_bytes = std::max(saver->peak_bytes(), loader->peak_bytes());

  if (check) {
    res.check_s = Time([&] {
      for (int r = 0; r < world; ++r) {
        DCPP_CHECK(kept[r].items_size() == plans[r].items_size(), "save_local dropped items of rank ", r);
      }
      res.balance = CheckGlobal(plans, global);
      int64_t sharded = 0;
      for (const TensorSpec& s : specs) sharded += Sharded(s.kind);
      const int64_t tensors = static_cast<int64_t>(specs.size());
      const int64_t expect = sharded * world + (tensors - sharded) + 1 + world;  // + step + rng.<r>
      DCPP_CHECK(res.written == expect, "global plan writes ", res.written, " items, expected ", expect);
      CheckLoad(targets, md, reads, missing);
    });
  }
  return res;
}

// ---- repeated saves with plan caching (SaveOptions::plan_caching) ----
//
// Two saves of the same state dict at R ranks through the engine's own plan exchange
// (core/engine/save_internal.h: LocalPlanFor on every rank, PlanGlobally on the coordinator,
// with the process-wide plan cache of core/engine/plan_cache.h), the second into the same
// folder (first_file_index moves on by thread_count, the first save's files are committed).
// Each save's planning cost is its critical path without the network: the slowest rank's
// local step (planner created, items serialized and looked up, save_local when not cached,
// its message built) + the coordinator's global step + the slowest rank's reading of its
// answer (a cached plan moved to the new file numbers and placed again there).
// The messages' bytes (what the gather carries) are reported beside it. Outside the timings
// the second save's answers are checked against planning it afresh without the cache: the
// same placed plans, byte for byte.
struct CachedRun {
  double first_s = 0, second_s = 0;
  double first_global_s = 0, second_global_s = 0;
  int64_t first_bytes = 0, second_bytes = 0;
  double ratio() const { return second_s / first_s; }
};

struct SaveRound {
  double seconds = 0, global_s = 0;
  int64_t bytes = 0;
  std::vector<std::string> answers;
  std::vector<dcpp::proto::SavePlan> placed;  // each rank's items, as it reads its answer
  bool all_cached = true;
};

SaveRound PlanOneSave(const std::vector<dcpp::proto::SavePlan>& plans, int first_file_index,
                      const std::vector<std::string>& committed, const dcpp::StorageWriter& writer, bool caching) {
  const int world = static_cast<int>(plans.size());
  SaveRound out;
  std::vector<std::string> messages(world);
  std::string global_key;
  double local_max = 0;
  for (int r = 0; r < world; ++r) {
    const double t = Time([&] {
      dcpp::PlanContext ctx;
      ctx.rank = r;
      ctx.world_size = world;
      ctx.thread_count = 2;
      ctx.first_file_index = first_file_index;
      auto saver = dcpp::SavePlanner::Create();
      dcpp::internal::PlanKeys keys;
      if (caching) keys = dcpp::internal::MakePlanKeys(*saver, ctx, {}, writer);
      bool cached = false;
      const std::string local = dcpp::internal::LocalPlanFor(plans[r], *saver, ctx, keys.rank, &cached);
      messages[r] = cached ? dcpp::internal::kPlanHash + dcpp::internal::PlanHash(local)
                           : dcpp::internal::kPlanFull + local;
      if (r == 0) global_key = keys.global;
    });
    local_max = std::max(local_max, t);
  }
  dcpp::PlanContext gctx;
  gctx.world_size = world;
  gctx.thread_count = 2;
  gctx.first_file_index = first_file_index;
  auto coordinator = dcpp::SavePlanner::Create();
  out.answers.resize(world);
  std::map<std::string, std::string> data;
  out.global_s = Time([&] {
    out.bytes = dcpp::internal::PlanGlobally(messages, global_key, *coordinator, gctx, committed, writer,
                                             &out.answers, &data);
  });
  double parse_max = 0;
  for (int r = 0; r < world; ++r) {
    DCPP_CHECK(!out.answers[r].empty() && out.answers[r][0] != dcpp::internal::kResend, "rank ", r,
               " was asked to resend its plan");
    out.all_cached = out.all_cached && out.answers[r][0] == dcpp::internal::kGlobalCached;
    parse_max = std::max(parse_max, Time([&] { out.placed.push_back(dcpp::internal::ReadAnswer(out.answers[r], writer)); }));
  }
  out.seconds = local_max + out.global_s + parse_max;
  return out;
}

CachedRun RunCached(int world, int total_items) {
  const int per_rank = std::max(kBytesPerRank + 8, total_items / world);
  const std::vector<TensorSpec> specs = MakeSpecs(per_rank - kBytesPerRank);
  std::vector<dcpp::proto::SavePlan> plans;
  for (int r = 0; r < world; ++r) plans.push_back(LocalPlan(specs, world, r));
  ScratchDir scratch("planning");
  const dcpp::FileSystemWriter writer(scratch.path());
  dcpp::internal::ClearPlanCaches();
  CachedRun run;
  const SaveRound first = PlanOneSave(plans, 0, {}, writer, true);
  DCPP_CHECK(!first.all_cached, "the first save reused a plan");
  std::set<std::string> files;
  for (const auto& p : first.placed) {
    for (const auto& it : p.items()) files.insert(it.file());
  }
  const std::vector<std::string> committed(files.begin(), files.end());
  const SaveRound second = PlanOneSave(plans, 2, committed, writer, true);
  DCPP_CHECK(second.all_cached, "the second save planned again");
  // The same answers as planning the second save afresh (untimed).
  const SaveRound fresh = PlanOneSave(plans, 2, committed, writer, false);
  for (int r = 0; r < world; ++r) {
    DCPP_CHECK(dcpp::internal::SerializePlan(second.placed[r]) == dcpp::internal::SerializePlan(fresh.placed[r]),
               "rank ", r, ": the cached plan differs from a fresh one");
  }
  run.first_s = first.seconds;
  run.second_s = second.seconds;
  run.first_global_s = first.global_s;
  run.second_global_s = second.global_s;
  run.first_bytes = first.bytes;
  run.second_bytes = second.bytes;
  return run;
}

int Main(int argc, char** argv) {
  int total_items = 100000;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--items=", 0) == 0) {
      total_items = std::stoi(a.substr(8));
    } else if (a.rfind("--reps=", 0) == 0) {
      reps = std::max(1, std::stoi(a.substr(7)));
    } else {
      std::cerr << "usage: planning [--items=N] [--reps=N]\n";
      return 2;
    }
  }
  std::cout << "planning: default Lua planners, ~" << total_items
            << " save items over all ranks, best of " << reps << " (times in ms)\n";
  std::printf("%6s %7s %6s %7s %7s %8s %8s %8s %8s %8s %8s %8s %7s %8s %7s\n", "ranks", "items", "/rank",
              "written", "reads", "create", "local", "lmax", "global", "md", "load", "total", "us/it",
              "check", "bal");
  std::map<int, Result> best;
  for (int world : kRankCounts) {
    Result b;
    for (int rep = 0; rep < reps; ++rep) {
      Result r = RunOnce(world, total_items, rep == 0);
      if (rep == 0 || r.total() < b.total()) {
        if (rep > 0) {
          r.check_s = b.check_s;
          r.balance = b.balance;
        }
        b = r;
      }
    }
    best[world] = b;
    std::printf("%6d %7lld %6lld %7lld %7lld %8.1f %8.1f %8.2f %8.1f %8.1f %8.1f %8.1f %7.2f %8.1f %7.3f\n", world,
                static_cast<long long>(b.items), static_cast<long long>(b.items / world),
                static_cast<long long>(b.written), static_cast<long long>(b.reads), b.create_s * 1e3,
                b.local_s * 1e3, b.local_max_s * 1e3, b.global_s * 1e3, b.metadata_s * 1e3, b.load_s * 1e3,
                b.total() * 1e3, b.us_per_item(), b.check_s * 1e3, b.balance);
  }
  std::cout << "columns: items = save items over all ranks; written = items in the global plan "
               "(replicated ones deduplicated); reads = reads one rank's load plan makes; create = "
               "both planners created; local = (a) summed over ranks, lmax = slowest rank; global = "
               "(b); md = metadata built; load = one rank's load plan; total = create + local + "
               "global + md + load; check = validation (untimed); bal = busiest writer's bytes / "
               "a lower bound for it (1 = no assignment could do better)\n";
  std::cout << "all global plans and load plans checked\n";

  const Result& big = best.at(1024);
  const Result& small = best.at(64);
  // planning_1024_total_s is an absolute time on purpose; target < 2 s on this 2-core machine.
  std::printf("BENCH planning_1024_total_s %.3f s\n", big.total());
  std::printf("BENCH planning_us_per_item_1024 %.3f us\n", big.us_per_item());
  std::printf("BENCH planning_us_per_item_64 %.3f us\n", small.us_per_item());
  std::printf("BENCH planning_growth_64_to_1024 %.3f ratio\n", big.us_per_item() / small.us_per_item());
  // How far the default planners stay below PlannerLimits (core/planner/limits.h).
  int64_t instructions = 0, lua_bytes = 0;
  for (const auto& [world, r] : best) {
    instructions = std::max(instructions, r.peak_instructions);
    lua_bytes = std::max(lua_bytes, r.peak_lua_bytes);
  }
  std::printf("BENCH planning_peak_instructions_per_call %lld instructions\n",
              static_cast<long long>(instructions));
  std::printf("BENCH planning_peak_lua_mib %.1f MiB\n", static_cast<double>(lua_bytes) / (1 << 20));

  // Repeated saves with plan caching, at 1024 ranks: the rep with the median ratio.
  std::vector<CachedRun> runs;
  for (int rep = 0; rep < reps; ++rep) runs.push_back(RunCached(1024, total_items));
  std::sort(runs.begin(), runs.end(), [](const CachedRun& a, const CachedRun& b) { return a.ratio() < b.ratio(); });
  for (const CachedRun& c : runs) {
    std::printf("plan caching, 1024 ranks: first save %.1f ms (global %.1f ms, %.2f MiB gathered), second %.2f ms "
                "(global %.2f ms, %.1f KiB gathered), ratio %.4f\n",
                c.first_s * 1e3, c.first_global_s * 1e3, static_cast<double>(c.first_bytes) / (1 << 20),
                c.second_s * 1e3, c.second_global_s * 1e3, static_cast<double>(c.second_bytes) / 1024, c.ratio());
  }
  const CachedRun& med = runs[runs.size() / 2];
  std::cout << "second save's plans checked equal to planning it afresh\n";
  // Target: <= 0.05 (issue 16).
  std::printf("BENCH plan_cached_vs_first %.4f ratio\n", med.ratio());
  std::printf("BENCH plan_cached_gather_bytes_vs_first %.5f ratio\n",
              static_cast<double>(med.second_bytes) / static_cast<double>(med.first_bytes));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dcpp_bench::RunMain("planning", Main, argc, argv); }
