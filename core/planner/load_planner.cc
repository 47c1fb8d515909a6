// LoadPlanner: runs a load script's load_local (which saved chunks feed each target) and
// optional load_broadcast (which replicated regions one rank reads for all), and validates
// what they return.
#include "core/planner/planner.h"

#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <lua.hpp>

#include "core/base/error.h"
#include "core/model/box.h"
#include "core/planner/lua_tables.h"
#include "core/planner/lua_vm.h"

namespace dcpp {

int64_t LoadPlanner::peak_instructions() const { return vm_->peak_instructions(); }
int64_t LoadPlanner::peak_bytes() const { return vm_->peak_bytes(); }

LoadPlanner::LoadPlanner(std::unique_ptr<LuaVm> vm, std::string name)
    : vm_(std::move(vm)), name_(std::move(name)) {}
LoadPlanner::~LoadPlanner() = default;

std::unique_ptr<LoadPlanner> LoadPlanner::Create(const std::string& script_path,
                                                 const PlannerLimits& limits) {
  auto [name, source] = ReadScript(script_path, "planners/default_load.lua");
  auto vm = LoadModule(name, source, {"load_local"}, limits);
  auto p = std::unique_ptr<LoadPlanner>(new LoadPlanner(std::move(vm), name));
  lua_State* L = p->vm_->state();
  PushMethod(L, "load_broadcast");
  p->has_broadcast_ = lua_isfunction(L, -1);
  lua_pop(L, 1);
  return p;
}

std::vector<LoadRead> LoadPlanner::Local(const PlanContext& ctx,
                                         const std::vector<LoadTarget>& targets,
                                         const proto::Metadata& md, std::vector<int>* missing) {
  lua_State* L = vm_->state();
  const int top = lua_gettop(L);
  const std::string where = "planner " + name_ + " load_local";
  PushMethod(L, "load_local");
  PushContext(L, ctx);
  lua_createtable(L, static_cast<int>(targets.size()), 0);
  for (size_t i = 0; i < targets.size(); ++i) {
    const LoadTarget& t = targets[i];
    lua_createtable(L, 0, 6);
    SetStr(L, "fqn", t.fqn);
    SetStr(L, "kind", t.is_bytes ? "bytes" : "tensor");
    if (!t.is_bytes) {
      SetStr(L, "dtype", t.dtype);
      SetInts(L, "shape", t.shape);
      SetInts(L, "offsets", t.box.offsets);
      SetInts(L, "sizes", t.box.sizes);
    }
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  PushMetadata(L, md);
  vm_->Call(3, 2, where);

  if (!lua_istable(L, -2)) throw Error(where + ": must return a list of reads");
  std::vector<LoadRead> reads;
  const int rd = lua_gettop(L) - 1;
  const int n = static_cast<int>(lua_objlen(L, rd));
  reads.reserve(n);
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, rd, i);
    const int it = lua_gettop(L);
    if (!lua_istable(L, it)) throw Error(StrCat(where, ": read ", i, " is not a table"));
    LoadRead r;
    int64_t target = 0, chunk = 0;
    bool has_key = false;
    if (!FieldInt(L, it, "target", &target) || target < 1 ||
        target > static_cast<int64_t>(targets.size())) {
      throw Error(StrCat(where, ": read ", i, " has no valid `target` (1..", targets.size(), ")"));
    }
    r.target = static_cast<int>(target - 1);
    r.key = FieldString(L, it, "key", &has_key);
    if (!has_key) throw Error(StrCat(where, ": read ", i, " has no `key` string"));
    if (FieldInt(L, it, "chunk", &chunk)) {
      DCPP_CHECK(chunk >= 0 && chunk <= std::numeric_limits<int>::max(), where, ": read ", i,
                 " has `chunk` ", chunk, ", not a chunk number (1..)");
      r.chunk = static_cast<int>(chunk - 1);
    }
    reads.push_back(std::move(r));
    lua_pop(L, 1);
  }
  if (missing != nullptr) {
    missing->clear();
    for (int64_t m : ReadInts(L, rd + 1, where + ": the list of missing targets")) {
      DCPP_CHECK(m >= 1 && m <= static_cast<int64_t>(targets.size()), where, ": missing target ", m,
                 " is not a target number (1..", targets.size(), ")");
      missing->push_back(static_cast<int>(m - 1));
    }
  }
  lua_settop(L, top);
  return reads;
}

std::vector<BroadcastGroup> LoadPlanner::Broadcast(
    const PlanContext& ctx, const std::vector<std::vector<LoadWant>>& wanted,
    const proto::Metadata& md) {
  lua_State* L = vm_->state();
  const int top = lua_gettop(L);
  const std::string where = "planner " + name_ + " load_broadcast";
  if (!has_broadcast_) return {};
  PushMethod(L, "load_broadcast");
  PushContext(L, ctx);
  lua_createtable(L, static_cast<int>(wanted.size()), 0);
  for (size_t r = 0; r < wanted.size(); ++r) {
    lua_createtable(L, static_cast<int>(wanted[r].size()), 0);
    for (size_t i = 0; i < wanted[r].size(); ++i) {
      const LoadWant& w = wanted[r][i];
      lua_createtable(L, 0, 7);
      SetStr(L, "fqn", w.fqn);
      SetStr(L, "key", w.key);
      SetStr(L, "dtype", w.dtype);
      SetInts(L, "shape", w.shape);
      SetInts(L, "offsets", w.box.offsets);
      SetInts(L, "sizes", w.box.sizes);
      SetNum(L, "nbytes", static_cast<double>(w.nbytes));
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
    lua_rawseti(L, -2, static_cast<int>(r + 1));
  }
  PushMetadata(L, md);
  vm_->Call(3, 1, where);
  if (lua_isnil(L, -1)) {
    lua_settop(L, top);
    return {};
  }
  if (!lua_istable(L, -1)) throw Error(where + ": must return a list of groups");

  // Each rank's targets by (fqn, box): the first one of each.
  const int world = static_cast<int>(wanted.size());
  std::vector<std::map<std::pair<std::string, Box>, const LoadWant*>> index(world);
  for (int r = 0; r < world; ++r) {
    for (const LoadWant& w : wanted[r]) index[r].emplace(std::make_pair(w.fqn, w.box), &w);
  }
  std::vector<BroadcastGroup> out;
  std::set<std::pair<std::string, Box>> seen;
  const int gl = lua_gettop(L);
  const int n = static_cast<int>(lua_objlen(L, gl));
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, gl, i);
    const int it = lua_gettop(L);
    if (!lua_istable(L, it)) throw Error(StrCat(where, ": group ", i, " is not a table"));
    BroadcastGroup g;
    bool has_fqn = false;
    g.fqn = FieldString(L, it, "fqn", &has_fqn);
    if (!has_fqn) throw Error(StrCat(where, ": group ", i, " has no `fqn` string"));
    RawField(L, it, "offsets");
    g.box.offsets = ReadInts(L, -1, StrCat(where, ": group ", i, " offsets"));
    RawField(L, it, "sizes");
    g.box.sizes = ReadInts(L, -1, StrCat(where, ": group ", i, " sizes"));
    lua_pop(L, 2);
    const std::string what = StrCat(where, ": group ", i, " (key '", g.fqn, "' ",
                                     g.box.offsets.size() == g.box.sizes.size()
                                         ? g.box.ToString()
                                         : std::string("with a malformed box"),
                                     ")");
    int64_t root = -1;
    if (!FieldInt(L, it, "root", &root)) throw Error(what + " has no `root` rank");
    DCPP_CHECK(root >= 0 && root < world, what, ": root ", root, " is not a rank (0..",
               world - 1, ")");
    g.root = static_cast<int>(root);
    DCPP_CHECK(seen.insert(std::make_pair(g.fqn, g.box)).second, what, " appears twice");
    const LoadWant* first = nullptr;
    for (int r = 0; r < world; ++r) {
      auto w = index[r].find(std::make_pair(g.fqn, g.box));
      DCPP_CHECK(w != index[r].end(), what, ": rank ", r, " has no target chunk of key '", g.fqn,
                 "' with exactly that box, so it cannot receive the region by broadcast");
      if (first == nullptr) {
        first = w->second;
        continue;
      }
      DCPP_CHECK(w->second->dtype == first->dtype, what, ": rank ", r, " wants it as ",
                 w->second->dtype, ", rank 0 as ", first->dtype);
      DCPP_CHECK(w->second->key == first->key, what, ": rank ", r, " reads it from saved key '",
                 w->second->key, "', rank 0 from '", first->key, "'");
    }
    out.push_back(std::move(g));
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  return out;
}

}  // namespace dcpp
