#include "core/engine/plan_cache.h"

#include <xxhash.h>

#include <climits>
#include <mutex>
#include <set>
#include <typeinfo>
#include <unordered_map>
#include <utility>

#include "core/base/error.h"
#include "core/format/file_names.h"

namespace dcpp::internal {
namespace {

// A bound on the entries of each cache, so that a process saving under ever new
// configurations does not grow without end. Ranks that are threads of one process take one
// rank entry each. Past the bound an arbitrary entry goes, which costs a full exchange.
constexpr size_t kMaxRankEntries = 4096;
constexpr size_t kMaxGlobalEntries = 16;

struct RankEntry {
  std::string items, local;
};

struct Caches {
  std::mutex mu;
  std::unordered_map<std::string, RankEntry> rank;  // guarded by mu
  std::unordered_map<std::string, std::shared_ptr<const CachedGlobalPlan>> global;  // guarded by mu
};

Caches& TheCaches() {
  static Caches* caches = new Caches;  // never destroyed: ranks may save during exit
  return *caches;
}

void Field(std::string* key, const std::string& value) {
  *key += std::to_string(value.size());
  *key += ':';
  *key += value;
}

template <class Map, class Value>
void PutBounded(Map& map, size_t bound, const std::string& key, Value value) {
  if (map.size() >= bound && !map.count(key)) map.erase(map.begin());
  map[key] = std::move(value);
}

}  // namespace

std::string CachedAnswerHeader(int from, int to) {
  std::string out(8, '\0');
  for (int i = 0; i < 4; ++i) {
    out[i] = static_cast<char>(static_cast<uint32_t>(from) >> (8 * i));
    out[4 + i] = static_cast<char>(static_cast<uint32_t>(to) >> (8 * i));
  }
  return out;
}

bool ReadCachedAnswerHeader(const std::string& answer, int* from, int* to) {
  if (answer.size() < 9) return false;
  uint32_t f = 0, t = 0;
  for (int i = 0; i < 4; ++i) {
    f |= static_cast<uint32_t>(static_cast<unsigned char>(answer[1 + i])) << (8 * i);
    t |= static_cast<uint32_t>(static_cast<unsigned char>(answer[5 + i])) << (8 * i);
  }
  *from = static_cast<int>(f);
  *to = static_cast<int>(t);
  return true;
}

std::string PlanHash(const std::string& bytes) {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  std::string out(16, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>(h.low64 >> (8 * i));
    out[8 + i] = static_cast<char>(h.high64 >> (8 * i));
  }
  return out;
}

PlanKeys MakePlanKeys(const SavePlanner& planner, const PlanContext& ctx, const PlannerLimits& limits,
                      const StorageWriter& writer) {
  std::string key;
  Field(&key, std::to_string(ctx.world_size));
  Field(&key, std::to_string(ctx.thread_count));
  Field(&key, planner.script_name());
  Field(&key, PlanHash(planner.script_source()));
  Field(&key, std::to_string(limits.instructions) + "," + std::to_string(limits.memory_bytes));
  Field(&key, typeid(writer).name());
  Field(&key, writer.EncodesBytes() ? "encodes" : "plain");
  Field(&key, std::to_string(ctx.options.size()));
  for (const auto& [k, v] : ctx.options) {
    Field(&key, k);
    Field(&key, v);
  }
  PlanKeys keys;
  keys.global = key;
  keys.rank = key;
  Field(&keys.rank, std::to_string(ctx.rank));
  return keys;
}

bool FindLocalPlan(const std::string& key, const std::string& items, std::string* local) {
  Caches& c = TheCaches();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.rank.find(key);
  if (it == c.rank.end() || it->second.items != items) return false;
  *local = it->second.local;
  return true;
}

void StoreLocalPlan(const std::string& key, const std::string& items, const std::string& local) {
  Caches& c = TheCaches();
  std::lock_guard<std::mutex> lock(c.mu);
  PutBounded(c.rank, kMaxRankEntries, key, RankEntry{items, local});
}

std::shared_ptr<const CachedGlobalPlan> FindGlobalPlan(const std::string& key) {
  Caches& c = TheCaches();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.global.find(key);
  return it == c.global.end() ? nullptr : it->second;
}

void StoreGlobalPlan(const std::string& key, std::shared_ptr<const CachedGlobalPlan> entry) {
  Caches& c = TheCaches();
  std::lock_guard<std::mutex> lock(c.mu);
  PutBounded(c.global, kMaxGlobalEntries, key, std::move(entry));
}

void ClearPlanCaches() {
  Caches& c = TheCaches();
  std::lock_guard<std::mutex> lock(c.mu);
  c.rank.clear();
  c.global.clear();
}

GatheredPlans ReadGathered(const std::vector<std::string>& messages, const CachedGlobalPlan* cached) {
  GatheredPlans g;
  const size_t world = messages.size();
  g.local.resize(world);
  g.hashes.resize(world);
  const bool usable = cached != nullptr && cached->hashes.size() == world && cached->local.size() == world;
  g.complete = true;
  g.unchanged = usable;
  for (size_t r = 0; r < world; ++r) {
    const std::string& m = messages[r];
    g.bytes += static_cast<int64_t>(m.size());
    DCPP_CHECK(!m.empty() && (m[0] == kPlanFull || (m[0] == kPlanHash && m.size() == 17)),
               "save: malformed local plan message from rank ", r, " (", m.size(), " bytes)");
    if (m[0] == kPlanFull) {
      g.local[r] = m.substr(1);
      g.hashes[r] = PlanHash(g.local[r]);
    } else {
      g.hashes[r] = m.substr(1);
      if (usable && cached->hashes[r] == g.hashes[r]) {
        g.local[r] = cached->local[r];
      } else {
        g.complete = false;
      }
    }
    if (!usable || cached->hashes[r] != g.hashes[r]) g.unchanged = false;
  }
  if (!g.complete) g.unchanged = false;
  return g;
}

bool NumberedFrom(const std::vector<proto::SavePlan>& global, int first) {
  for (const proto::SavePlan& plan : global) {
    for (const proto::PlanItem& it : plan.items()) {
      long rank = 0, n = 0;
      if (!ParseDataFileName(it.file(), &rank, &n) || n < first) return false;
    }
  }
  return true;
}

bool MoveFileNumbers(std::vector<proto::SavePlan>& global, int from, int to,
                     const std::vector<std::string>& committed) {
  const std::set<std::string> old(committed.begin(), committed.end());
  std::unordered_map<std::string, std::string> moved;  // old name -> new name
  for (proto::SavePlan& plan : global) {
    for (proto::PlanItem& it : *plan.mutable_items()) {
      auto pos = moved.find(it.file());
      if (pos == moved.end()) {
        long rank = 0, n = 0;
        if (!ParseDataFileName(it.file(), &rank, &n) || n < from) return false;
        const long shifted = n - from + to;
        if (shifted < 0 || shifted > INT_MAX) return false;
        std::string name = "__" + std::to_string(rank) + "_" + std::to_string(shifted) + ".distcp";
        if (from == to) name = it.file();  // (keeps a name written with leading zeros as it is)
        if (old.count(name)) return false;
        pos = moved.emplace(it.file(), std::move(name)).first;
      }
      it.set_file(pos->second);
    }
  }
  return true;
}

}  // namespace dcpp::internal
