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
#include "core/format/file_names.h"

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

namespace {

// Whether a plan cached under first_file_index `from` may be used at `to`: it was numbered
// from `from` (or from == to), and no committed file is numbered `to` or above
// (FirstFreeFileIndex promises that; checked, since a wrong answer would overwrite the
// committed checkpoint, and ValidateAndPlace's check does not run on a cached plan).
bool MayMove(const CachedGlobalPlan& cached, int to, const std::vector<std::string>& committed) {
  if (cached.first_file_index != to && !cached.relocatable) return false;
  for (const std::string& name : committed) {
    long rank = 0, n = 0;
    if (ParseDataFileName(name, &rank, &n) && n >= to) return false;
  }
  return true;
}

}  // namespace

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
  if (in.unchanged && MayMove(*cached, ctx.first_file_index, committed)) {
    const std::string head = kGlobalCached + CachedAnswerHeader(cached->first_file_index, ctx.first_file_index);
    for (size_t r = 0; r < scattered->size(); ++r) (*scattered)[r] = head + cached->answers[r];
    *planner_data = cached->planner_data;
    return in.bytes;
  }
  std::vector<proto::SavePlan> plans(in.local.size());
  for (size_t r = 0; r < plans.size(); ++r) {
    DCPP_CHECK(plans[r].ParseFromString(in.local[r]), "save: corrupt local plan from rank ", r);
  }
  planner_data->clear();
  std::vector<proto::SavePlan> global = planner.Global(ctx, plans, planner_data);
  ValidateAndPlace(plans, global, committed, planner.script_name(), writer);
  std::vector<std::string> answers(global.size());
  for (size_t r = 0; r < global.size(); ++r) {
    global[r].SerializeToString(&answers[r]);
    (*scattered)[r] = kGlobalPlanned + answers[r];
  }
  if (!cache_key.empty()) {
    auto entry = std::make_shared<CachedGlobalPlan>();
    entry->hashes = std::move(in.hashes);
    entry->local = std::move(in.local);
    entry->answers = std::move(answers);
    entry->planner_data = *planner_data;
    entry->first_file_index = ctx.first_file_index;
    entry->relocatable = NumberedFrom(global, ctx.first_file_index);
    StoreGlobalPlan(cache_key, std::move(entry));
  }
  return in.bytes;
}

proto::SavePlan ReadAnswer(const std::string& answer, const StorageWriter& writer) {
  std::vector<proto::SavePlan> mine(1);
  int from = 0, to = 0;
  const bool cached = !answer.empty() && answer[0] == kGlobalCached;
  const size_t skip = cached ? 9 : 1;
  DCPP_CHECK(!answer.empty() && (answer[0] == kGlobalPlanned || (cached && ReadCachedAnswerHeader(answer, &from, &to))) &&
                 mine[0].ParseFromArray(answer.data() + skip, static_cast<int>(answer.size() - skip)),
             "save: malformed global plan from rank 0 (", answer.size(), " bytes)");
  if (cached && from != to) {
    DCPP_CHECK(MoveFileNumbers(mine, from, to, {}), "save: the cached plan from rank 0 cannot move from file ",
               from, " to ", to);
    PlaceItems(mine, writer);
  }
  return std::move(mine[0]);
}

}  // namespace internal

}  // namespace dcpp
