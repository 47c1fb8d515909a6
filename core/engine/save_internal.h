// The coordinator's part of a save, shared by save() and convert(): validating a planner's
// global plan and placing its items, and assembling the metadata from the write results.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/format/metadata.pb.h"
#include "core/format/plan.pb.h"
#include "core/planner/planner.h"
#include "core/storage/storage.h"

namespace dcpp::internal {

// Checks the planner's global plan against the local plans (every item written once, plain
// new file names, one rank per file, nothing dropped), then places every item in its file at
// a 4 KiB-aligned offset, leaving room for the frame `writer` wraps around each item.
// `committed`: the files of the checkpoint already in the folder.
void ValidateAndPlace(const std::vector<proto::SavePlan>& local,
                      std::vector<proto::SavePlan>& global,
                      const std::vector<std::string>& committed, const std::string& planner,
                      const StorageWriter& writer);

// Places every item of `global` in its file at a 4 KiB-aligned offset after the items before
// it there, leaving room for the frame `writer` wraps around each item (the last part of
// ValidateAndPlace, which a reused cached plan runs again).
void PlaceItems(std::vector<proto::SavePlan>& global, const StorageWriter& writer);

// The plan exchange of save(), with the plan cache (plan_cache.h); a key left empty means no
// caching. LocalPlanFor: each rank's local plan (save_local's answer to `items`, serialized
// deterministically), from the cache under `rank_key` when it holds one for exactly these
// items (*cached = true), else from the planner. PlanGlobally: the coordinator reads the
// gathered local-plan messages and fills one answer per rank in `scattered`: the cached global
// plan moved to ctx.first_file_index when no rank's plan changed, a new, validated global plan
// otherwise, or kResend to all when some rank sent a hash the cache cannot resolve. Returns
// the bytes of the messages. ReadAnswer: a rank's placed items from the coordinator's answer
// (a cached plan moved to this save's file numbers and placed again).
std::string SerializePlan(const proto::SavePlan& plan);
std::string LocalPlanFor(const proto::SavePlan& items, SavePlanner& planner, const PlanContext& ctx,
                         const std::string& rank_key, bool* cached);
int64_t PlanGlobally(const std::vector<std::string>& gathered, const std::string& cache_key, SavePlanner& planner,
                     const PlanContext& ctx, const std::vector<std::string>& committed, const StorageWriter& writer,
                     std::vector<std::string>* scattered, std::map<std::string, std::string>* planner_data);
proto::SavePlan ReadAnswer(const std::string& answer, const StorageWriter& writer);

// The metadata of a checkpoint from every rank's serialized proto::WriteResults; `files`
// receives the data files it references.
proto::Metadata BuildMetadata(const std::vector<std::string>& results, const std::string& creator,
                              int world, const std::map<std::string, std::string>& data,
                              std::vector<std::string>* files);

}  // namespace dcpp::internal
