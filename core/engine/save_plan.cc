// The plan exchange of save() (save_internal.h), with the plan cache of plan_cache.h.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/engine/plan_cache.h"
#include "core/engine/save_internal.h"

namespace dcpp {
namespace internal {

std::string SerializePlan(const proto::SavePlan& plan) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    plan.SerializeToCodedStream(&coded);
  }
  return out;
}

std::string LocalPlanFor(const proto::SavePlan& items, SavePlanner& planner, const PlanContext& ctx,
                         const std::string& rank_key, bool* cached) {
  std::string item_bytes, local;
  *cached = false;
  if (!rank_key.empty()) {
    item_bytes = SerializePlan(items);
    *cached = FindLocalPlan(rank_key, item_bytes, &local);
  }
  if (!*cached) {
    local = SerializePlan(planner.Local(ctx, items));
    if (!rank_key.empty()) StoreLocalPlan(rank_key, item_bytes, local);
  }
  return local;
}

int64_t PlanGlobally(const std::vector<std::string>& gathered, const std::string& cache_key, SavePlanner& planner,
                     const PlanContext& ctx, const std::vector<std::string>& committed, const StorageWriter& writer,
                     std::vector<std::string>* scattered, std::map<std::string, std::string>* planner_data) {
  const std::shared_ptr<const CachedGlobalPlan> cached =
      cache_key.empty() ? nullptr : FindGlobalPlan(cache_key);
  GatheredPlans in = ReadGathered(gathered, cached.get());
  if (!in.complete) {
    for (std::string& s : *scattered) s.assign(1, kResend);
    return in.bytes;
  }
  std::vector<proto::SavePlan> global;
  char tag = kGlobalPlanned;
  if (in.unchanged) {
    global = cached->global;
    if (MoveFileNumbers(global, cached->first_file_index, ctx.first_file_index, committed)) {
      PlaceItems(global, writer);
      *planner_data = cached->planner_data;
      tag = kGlobalCached;
    }
  }
  if (tag != kGlobalCached) {
    std::vector<proto::SavePlan> plans(in.local.size());
    for (size_t r = 0; r < plans.size(); ++r) {
      DCPP_CHECK(plans[r].ParseFromString(in.local[r]), "save: corrupt local plan from rank ", r);
    }
    planner_data->clear();
    global = planner.Global(ctx, plans, planner_data);
    ValidateAndPlace(plans, global, committed, planner.script_name(), writer);
    if (!cache_key.empty()) {
      auto entry = std::make_shared<CachedGlobalPlan>();
      entry->hashes = std::move(in.hashes);
      entry->local = std::move(in.local);
      entry->global = global;
      entry->planner_data = *planner_data;
      entry->first_file_index = ctx.first_file_index;
      StoreGlobalPlan(cache_key, std::move(entry));
    }
  }
  for (size_t r = 0; r < global.size(); ++r) {
    (*scattered)[r].assign(1, tag);
    global[r].AppendToString(&(*scattered)[r]);
  }
  return in.bytes;
}

}  // namespace internal

}  // namespace dcpp
