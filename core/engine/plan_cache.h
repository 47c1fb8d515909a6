// Save-plan caching (SaveOptions::plan_caching): what ranks remember between saves so that a
// save whose local plans are all unchanged runs no planner and sends hashes, not plans.
//
// Each rank keeps, per configuration (PlanKeys), the items it last planned (the plan that
// save.cc's LocalItems builds, serialized) and what the script's save_local made of them.
// When its items are byte-identical to those, it reuses that result without calling the
// script and sends the coordinator a hash (XXH3-128) of it instead of the plan. The
// coordinator keeps, per configuration, the local plan it last had from every rank and the
// global plan it made of them. It reuses that global plan only when every rank's hash equals
// the one it holds for that rank; when some differ it plans again from the plans it has (sent
// or cached), and when it cannot resolve a hash it asks every rank for its plan in full.
//
// The global plan is reused across checkpoint folders and across saves into one folder: its
// data file numbers move by the change in ctx.first_file_index (every number must have been
// at least the first_file_index it was planned with) and the engine places the items in their
// files again. So a script's save_global must name files from ctx.first_file_index, as the
// embedded planner does, and depend on nothing else that changes between saves (the sandbox
// offers no clock or I/O); a script that does otherwise must run with plan_caching off.
//
// The caches are process-wide, so ranks that are threads of one process keep theirs apart by
// rank. Thread-safe. An entry is used only after comparing it with the current inputs, so a
// stale or foreign entry (another group of ranks in this process, a failed save) costs a full
// exchange, never a wrong plan.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/format/plan.pb.h"
#include "core/planner/limits.h"
#include "core/planner/planner.h"
#include "core/storage/storage.h"

namespace dcpp::internal {

// Messages of the plan exchange. A rank sends kPlanFull + its serialized local plan or
// kPlanHash + PlanHash(that plan); the coordinator answers each rank with kGlobalPlanned + its
// serialized placed plan, with kGlobalCached + CachedAnswerHeader + the placed plan it cached
// (the rank moves its files to the new numbers and places its items again), or with kResend
// alone (send the full plan).
constexpr char kPlanFull = 'P';
constexpr char kPlanHash = 'H';
constexpr char kGlobalPlanned = 'G';
constexpr char kGlobalCached = 'C';
constexpr char kResend = 'R';

// The file numbers a cached answer was placed with (`from`) and those of this save (`to`):
// 8 bytes, two little-endian int32.
std::string CachedAnswerHeader(int from, int to);
// Reads them back from answer[1..8]; false if the answer is too short.
bool ReadCachedAnswerHeader(const std::string& answer, int* from, int* to);

// XXH3-128 of `bytes`, as 16 bytes.
std::string PlanHash(const std::string& bytes);

// The cache keys of a save's configuration: everything besides the local plans that the
// planner's answer may depend on (world size, thread count, the script's name and text, its
// options and limits, the writer's kind). `rank` is this rank's key, `global` the
// coordinator's.
struct PlanKeys {
  std::string rank;
  std::string global;
};
PlanKeys MakePlanKeys(const SavePlanner& planner, const PlanContext& ctx, const PlannerLimits& limits,
                      const StorageWriter& writer);

// This rank's save_local result for `items` (serialized) if it holds one for exactly these
// items under `key`; else false.
bool FindLocalPlan(const std::string& key, const std::string& items, std::string* local);
void StoreLocalPlan(const std::string& key, const std::string& items, const std::string& local);

// What the coordinator remembers of its last planned save under one key.
struct CachedGlobalPlan {
  std::vector<std::string> hashes;  // PlanHash of every rank's local plan
  std::vector<std::string> local;   // every rank's serialized local plan
  std::vector<std::string> answers;  // every rank's placed plan, serialized (no tag)
  std::map<std::string, std::string> planner_data;
  int first_file_index = 0;
  // Every data file number is at least first_file_index (so the plan may move to others).
  bool relocatable = false;
};

std::shared_ptr<const CachedGlobalPlan> FindGlobalPlan(const std::string& key);
void StoreGlobalPlan(const std::string& key, std::shared_ptr<const CachedGlobalPlan> entry);

// Drops every entry (tests).
void ClearPlanCaches();

// The coordinator's reading of the gathered messages against `cached` (may be null).
struct GatheredPlans {
  std::vector<std::string> local;   // every rank's serialized local plan ("" where unresolved)
  std::vector<std::string> hashes;  // their PlanHash
  bool complete = false;            // every rank's plan is known
  bool unchanged = false;           // ... and every one equals `cached`'s for that rank
  int64_t bytes = 0;                // bytes of the messages
};
// Throws dcpp::Error naming the rank for a malformed message.
GatheredPlans ReadGathered(const std::vector<std::string>& messages, const CachedGlobalPlan* cached);

// True when every file of `global` is a data file name numbered at least `first`.
bool NumberedFrom(const std::vector<proto::SavePlan>& global, int first);

// `global` (placed under first_file_index `from`) moved to data file numbers starting at `to`:
// each "__<r>_<n>.distcp" becomes "__<r>_<n - from + to>.distcp". False, leaving `global`
// in an unspecified state, when some file is no data file name, has n < from, would pass
// 2^31 - 1, or lands on one of `committed`.
bool MoveFileNumbers(std::vector<proto::SavePlan>& global, int from, int to,
                     const std::vector<std::string>& committed);

}  // namespace dcpp::internal
