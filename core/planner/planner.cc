// Finding planner scripts (embedded or on disk) and the SavePlanner; LoadPlanner and
// ConvertPlanner are in load_planner.cc and convert_planner.cc, the Lua marshalling they share
// in lua_tables.cc.
#include "core/planner/planner.h"

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <lua.hpp>

#include "core/base/error.h"
#include "core/planner/lua_tables.h"
#include "core/planner/lua_vm.h"

namespace dcpp {

// Defined by the embed_files() rule in planners/BUILD.
const std::vector<std::pair<std::string_view, std::string_view>>& EmbeddedPlanners();

std::string EmbeddedPlanner(const std::string& name) {
  for (const auto& [n, text] : EmbeddedPlanners()) {
    if (n == name) return std::string(text);
  }
  throw Error("no embedded planner named " + name);
}

std::pair<std::string, std::string> ResolvePlanner(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (in) {
    std::ostringstream ss;
    ss << in.rdbuf();
    return {path, ss.str()};
  }
  std::string base = path;
  if (base.rfind("planners/", 0) == 0) base = base.substr(9);
  if (base.size() < 4 || base.compare(base.size() - 4, 4, ".lua") != 0) base += ".lua";
  for (const auto& [n, text] : EmbeddedPlanners()) {
    if (n == "planners/" + base) return {std::string(n), std::string(text)};
  }
  throw Error("cannot read planner script " + path + " (no such file, and no embedded planner of that name)");
}

// ---- SavePlanner ----

int64_t SavePlanner::peak_instructions() const { return vm_->peak_instructions(); }
int64_t SavePlanner::peak_bytes() const { return vm_->peak_bytes(); }

SavePlanner::SavePlanner(std::unique_ptr<LuaVm> vm, std::string name, std::string source)
    : vm_(std::move(vm)), name_(std::move(name)), source_(std::move(source)) {}
SavePlanner::~SavePlanner() = default;

std::unique_ptr<SavePlanner> SavePlanner::Create(const std::string& script_path,
                                                 const PlannerLimits& limits) {
  auto [name, source] = ReadScript(script_path, "planners/default_save.lua");
  return FromSource(name, source, limits);
}

std::unique_ptr<SavePlanner> SavePlanner::FromSource(const std::string& name,
                                                     const std::string& source,
                                                     const PlannerLimits& limits) {
  auto vm = LoadModule(name, source, {"save_global"}, limits);
  return std::unique_ptr<SavePlanner>(new SavePlanner(std::move(vm), name, source));
}

proto::SavePlan SavePlanner::Local(const PlanContext& ctx, const proto::SavePlan& plan) {
  lua_State* L = vm_->state();
  const int top = lua_gettop(L);
  PushMethod(L, "save_local");
  if (lua_isnil(L, -1)) {  // optional
    lua_settop(L, top);
    return plan;
  }
  PushContext(L, ctx);
  PushItems(L, plan);
  vm_->Call(2, 1, "planner " + name_ + " save_local");
  proto::SavePlan out = ReadItems(L, -1, plan, "planner " + name_ + " save_local", false);
  lua_settop(L, top);
  return out;
}

std::vector<proto::SavePlan> SavePlanner::Global(const PlanContext& ctx,
                                                 const std::vector<proto::SavePlan>& plans,
                                                 std::map<std::string, std::string>* data) {
  lua_State* L = vm_->state();
  const int top = lua_gettop(L);
  const std::string where = "planner " + name_ + " save_global";
  PushMethod(L, "save_global");
  PushContext(L, ctx);
  lua_createtable(L, static_cast<int>(plans.size()), 0);
  for (size_t r = 0; r < plans.size(); ++r) {
    PushItems(L, plans[r]);
    lua_rawseti(L, -2, static_cast<int>(r + 1));
  }
  vm_->Call(2, 2, where);
  if (!lua_istable(L, -2) || lua_objlen(L, -2) != plans.size()) {
    throw Error(StrCat(where, ": must return one plan per rank (", plans.size(), ")"));
  }
  std::vector<proto::SavePlan> out;
  for (size_t r = 0; r < plans.size(); ++r) {
    lua_rawgeti(L, -2, static_cast<int>(r + 1));
    out.push_back(ReadItems(L, lua_gettop(L), plans[r], StrCat(where, " (rank ", r, ")"), true));
    lua_pop(L, 1);
  }
  if (data != nullptr && lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      if (lua_type(L, -2) == LUA_TSTRING) {
        (*data)[lua_tostring(L, -2)] = lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  return out;
}

}  // namespace dcpp
