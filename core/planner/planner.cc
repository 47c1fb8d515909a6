#include "core/planner/planner.h"

#include <lua.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/base/error.h"
#include "core/planner/lua_vm.h"

namespace dcpp {

// Defined by the embed_files() rule in planners/BUILD.
const std::vector<std::pair<std::string_view, std::string_view>>& EmbeddedPlanners();

namespace {

// ---- Lua <-> C++ conversion helpers ----

void PushInts(lua_State* L, const std::vector<int64_t>& v) {
  lua_createtable(L, static_cast<int>(v.size()), 0);
  for (size_t i = 0; i < v.size(); ++i) {
    lua_pushnumber(L, static_cast<lua_Number>(v[i]));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

template <typename Repeated>
void PushIntsR(lua_State* L, const Repeated& v) {
  lua_createtable(L, v.size(), 0);
  for (int i = 0; i < v.size(); ++i) {
    lua_pushnumber(L, static_cast<lua_Number>(v.Get(i)));
    lua_rawseti(L, -2, i + 1);
  }
}

// A Lua number as an int64: false for a fraction, NaN, infinity or one out of int64's range
// (a plain cast of those is undefined behaviour).
bool LuaInt(lua_Number v, int64_t* out) {
  constexpr lua_Number kLimit = 9223372036854775808.0;  // 2^63
  if (!(v >= -kLimit && v < kLimit) || v != static_cast<lua_Number>(static_cast<int64_t>(v))) return false;
  *out = static_cast<int64_t>(v);
  return true;
}

// The integers of the list at `idx` (empty if it is not a table); false at the first element
// that is not an integer (`*bad` is its 1-based position).
bool TryReadInts(lua_State* L, int idx, std::vector<int64_t>* out, int* bad) {
  out->clear();
  if (!lua_istable(L, idx)) return true;
  const int n = static_cast<int>(lua_objlen(L, idx));
  out->reserve(n);
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, idx, i);
    int64_t v = 0;
    const bool ok = lua_type(L, -1) == LUA_TNUMBER && LuaInt(lua_tonumber(L, -1), &v);
    lua_pop(L, 1);
    if (!ok) {
      *bad = i;
      return false;
    }
    out->push_back(v);
  }
  return true;
}

// For lists a planner returns: throws dcpp::Error naming `what` and the element.
std::vector<int64_t> ReadInts(lua_State* L, int idx, const std::string& what) {
  std::vector<int64_t> out;
  int bad = 0;
  if (!TryReadInts(L, idx, &out, &bad)) {
    lua_rawgeti(L, idx, bad);
    const std::string text = lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1);
    lua_pop(L, 1);
    throw Error(StrCat(what, ": element ", bad, " (", text, ") is not an integer within int64's range"));
  }
  return out;
}

// For the `dcpp` helpers called from Lua: a Lua error naming the helper.
std::vector<int64_t> ReadIntsArg(lua_State* L, int idx, const char* helper) {
  std::vector<int64_t> out;
  int bad = 0;
  if (!TryReadInts(L, idx, &out, &bad)) {
    luaL_error(L, "%s: argument %d, element %d is not an integer within int64's range", helper, idx, bad);
  }
  return out;
}

void SetStr(lua_State* L, const char* k, const std::string& v) {
  lua_pushlstring(L, v.data(), v.size());
  lua_setfield(L, -2, k);
}
void SetNum(lua_State* L, const char* k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}
void SetInts(lua_State* L, const char* k, const std::vector<int64_t>& v) {
  PushInts(L, v);
  lua_setfield(L, -2, k);
}
template <typename Repeated>
void SetIntsR(lua_State* L, const char* k, const Repeated& v) {
  PushIntsR(L, v);
  lua_setfield(L, -2, k);
}

// ---- the `dcpp` helper table ----

int LuaOverlap(lua_State* L) {
  const Box a{ReadIntsArg(L, 1, "dcpp.overlap"), ReadIntsArg(L, 2, "dcpp.overlap")};
  const Box b{ReadIntsArg(L, 3, "dcpp.overlap"), ReadIntsArg(L, 4, "dcpp.overlap")};
  if (a.sizes.size() != b.sizes.size() || a.offsets.size() != a.sizes.size() ||
      b.offsets.size() != b.sizes.size()) {
    return luaL_error(L, "dcpp.overlap: boxes of different ranks");
  }
  const auto r = Intersect(a, b);
  if (!r) return 0;
  PushInts(L, r->offsets);
  PushInts(L, r->sizes);
  return 2;
}

int LuaBoxKey(lua_State* L) {
  std::string key;
  for (int arg = 1; arg <= 2; ++arg) {
    for (int64_t v : ReadIntsArg(L, arg, "dcpp.box_key")) key += std::to_string(v) + ",";
    key += ":";
  }
  lua_pushlstring(L, key.data(), key.size());
  return 1;
}

int LuaNumel(lua_State* L) {
  double n = 1;
  for (int64_t v : ReadIntsArg(L, 1, "dcpp.numel")) n *= static_cast<double>(v);
  lua_pushnumber(L, n);
  return 1;
}

// dcpp.sorted_keys(t): the string keys of table `t`, sorted (a stable order for output).
int LuaSortedKeys(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  std::vector<std::string> keys;
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING) keys.emplace_back(lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  std::sort(keys.begin(), keys.end());
  lua_createtable(L, static_cast<int>(keys.size()), 0);
  for (size_t i = 0; i < keys.size(); ++i) {
    lua_pushlstring(L, keys[i].data(), keys[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

void InstallHelpers(lua_State* L) {
  lua_newtable(L);
  lua_pushcfunction(L, LuaSortedKeys);
  lua_setfield(L, -2, "sorted_keys");
  lua_pushcfunction(L, LuaOverlap);
  lua_setfield(L, -2, "overlap");
  lua_pushcfunction(L, LuaBoxKey);
  lua_setfield(L, -2, "box_key");
  lua_pushcfunction(L, LuaNumel);
  lua_setfield(L, -2, "numel");
  lua_setglobal(L, "dcpp");
}

void PushContext(lua_State* L, const PlanContext& ctx) {
  lua_newtable(L);
  SetNum(L, "rank", ctx.rank);
  SetNum(L, "world_size", ctx.world_size);
  SetInts(L, "mesh", ctx.mesh.empty() ? std::vector<int64_t>{ctx.world_size} : ctx.mesh);
  SetNum(L, "thread_count", ctx.thread_count);
  lua_pushboolean(L, ctx.allow_partial_load);
  lua_setfield(L, -2, "allow_partial_load");
  SetNum(L, "first_file_index", ctx.first_file_index);
  SetStr(L, "comm_device", ctx.comm_device);
  lua_newtable(L);
  for (const auto& [k, v] : ctx.options) SetStr(L, k.c_str(), v);
  lua_setfield(L, -2, "options");
  lua_pushcfunction(L, LuaOverlap);  // not from the global `dcpp`, which a script may change
  lua_setfield(L, -2, "overlap");
}

void PushItem(lua_State* L, const proto::PlanItem& it) {
  lua_createtable(L, 0, 10);
  SetStr(L, "fqn", it.fqn());
  SetStr(L, "kind", it.is_bytes() ? "bytes" : "tensor");
  if (!it.is_bytes()) {
    SetStr(L, "dtype", it.dtype());
    SetIntsR(L, "shape", it.shape());
    SetIntsR(L, "offsets", it.offsets());
    SetIntsR(L, "sizes", it.sizes());
  }
  SetNum(L, "nbytes", static_cast<double>(it.nbytes()));
  SetNum(L, "index", it.index() + 1);
  if (!it.file().empty()) SetStr(L, "file", it.file());
}

// md = {tensors = {[fqn] = {dtype, shape, chunks = {{offsets, sizes}, ...}}},
//       bytes = {[fqn] = {length}}, world_size}
void PushMetadata(lua_State* L, const proto::Metadata& md) {
  lua_createtable(L, 0, 3);
  lua_createtable(L, 0, md.tensors_size());
  for (const auto& t : md.tensors()) {
    lua_createtable(L, 0, 3);
    SetStr(L, "dtype", t.dtype());
    SetIntsR(L, "shape", t.shape());
    lua_createtable(L, t.chunks_size(), 0);
    for (int j = 0; j < t.chunks_size(); ++j) {
      lua_createtable(L, 0, 2);
      SetIntsR(L, "offsets", t.chunks(j).offsets());
      SetIntsR(L, "sizes", t.chunks(j).sizes());
      lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, "chunks");
    lua_setfield(L, -2, t.fqn().c_str());
  }
  lua_setfield(L, -2, "tensors");
  lua_createtable(L, 0, md.bytes_size());
  for (const auto& b : md.bytes()) {
    lua_createtable(L, 0, 1);
    SetNum(L, "length", static_cast<double>(b.length()));
    lua_setfield(L, -2, b.fqn().c_str());
  }
  lua_setfield(L, -2, "bytes");
  SetNum(L, "world_size", md.world_size());
}

void PushItems(lua_State* L, const proto::SavePlan& plan) {
  lua_createtable(L, plan.items_size(), 0);
  for (int i = 0; i < plan.items_size(); ++i) {
    PushItem(L, plan.items(i));
    lua_rawseti(L, -2, i + 1);
  }
}

// Plan tables are read with raw access (lua_rawget): a metatable a script put on them is
// ignored, so no script code runs outside the protected, bounded calls of LuaVm.
void RawField(lua_State* L, int idx, const char* k) {
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  lua_pushstring(L, k);
  lua_rawget(L, idx);
}

std::string FieldString(lua_State* L, int idx, const char* k, bool* present) {
  RawField(L, idx, k);
  *present = lua_type(L, -1) == LUA_TSTRING;
  std::string s;
  if (*present) {
    size_t n;
    const char* p = lua_tolstring(L, -1, &n);
    s.assign(p, n);
  }
  lua_pop(L, 1);
  return s;
}

bool FieldInt(lua_State* L, int idx, const char* k, int64_t* out) {
  RawField(L, idx, k);
  // A fraction or an out-of-range number counts as absent (callers then name the field).
  const bool ok = lua_type(L, -1) == LUA_TNUMBER && LuaInt(lua_tonumber(L, -1), out);
  lua_pop(L, 1);
  return ok;
}

// Reads back a list of items returned by a planner; each must carry a valid `index` into
// `source` (the items the planner was given), which supplies every field the planner may not
// change. `fqn` and `file` are taken from the planner.
proto::SavePlan ReadItems(lua_State* L, int idx, const proto::SavePlan& source,
                          const std::string& where, bool need_file) {
  if (!lua_istable(L, idx)) throw Error(where + ": expected a list of items");
  proto::SavePlan out;
  out.set_rank(source.rank());
  const int n = static_cast<int>(lua_objlen(L, idx));
  // An item's `index` is the one PushItem gave it (its place in the engine's own list), not its
  // place in `source`: a save_local that dropped or reordered items makes the two differ.
  std::unordered_map<int64_t, int> position;
  for (int k = 0; k < source.items_size(); ++k) position.emplace(source.items(k).index() + 1, k);
  std::vector<bool> seen(source.items_size(), false);
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, idx, i);
    const int it = lua_gettop(L);
    if (!lua_istable(L, it)) throw Error(StrCat(where, ": item ", i, " is not a table"));
    int64_t index = 0;
    const auto at = FieldInt(L, it, "index", &index) ? position.find(index) : position.end();
    if (at == position.end()) {
      throw Error(StrCat(where, ": item ", i, " has no valid `index` (the `index` of an item it was given)"));
    }
    if (seen[at->second]) throw Error(StrCat(where, ": item index ", index, " appears twice"));
    seen[at->second] = true;
    proto::PlanItem item = source.items(at->second);
    bool has_fqn = false, has_file = false;
    const std::string fqn = FieldString(L, it, "fqn", &has_fqn);
    if (!has_fqn || fqn.empty()) throw Error(StrCat(where, ": item ", i, " has no `fqn` string"));
    item.set_fqn(fqn);
    const std::string file = FieldString(L, it, "file", &has_file);
    if (need_file && !has_file) {
      throw Error(StrCat(where, ": item '", fqn, "' has no `file`"));
    }
    if (has_file) item.set_file(file);
    *out.add_items() = std::move(item);
    lua_pop(L, 1);
  }
  return out;
}

std::pair<std::string, std::string> ReadScript(const std::string& path, const char* embedded) {
  if (path.empty()) return {embedded, EmbeddedPlanner(embedded)};
  return ResolvePlanner(path);
}

// The functions and option table a planner may define.
constexpr const char* kModuleFields[] = {"save_local",     "save_global", "load_local",
                                         "load_broadcast", "convert",     "options"};

// Runs in protected mode (LuaVm::Call) with the script's module table P as argument 1:
// returns a plain table of P's known fields. Reading P itself may run the script's code (an
// __index metamethod), so it happens here, within the limits, rather than in the engine.
int CopyModuleFields(lua_State* L) {
  lua_createtable(L, 0, static_cast<int>(std::size(kModuleFields)));
  for (const char* field : kModuleFields) {
    lua_getfield(L, 1, field);
    lua_setfield(L, -2, field);
  }
  return 1;
}

// Loads a planner script and leaves a copy of its module table's fields in the registry under
// "dcpp.planner".
std::unique_ptr<LuaVm> LoadModule(const std::string& name, const std::string& source,
                                  const std::vector<const char*>& required,
                                  const PlannerLimits& limits) {
  auto vm = std::make_unique<LuaVm>(limits);
  lua_State* L = vm->state();
  InstallHelpers(L);
  vm->Run(source, name, 1);
  if (!lua_istable(L, -1)) {
    throw Error("Lua planner " + name + " must return a table of functions (got " +
                luaL_typename(L, -1) + ")");
  }
  lua_pushcfunction(L, CopyModuleFields);
  lua_insert(L, -2);
  vm->Call(1, 1, "planner " + name + " (reading the table it returned)");
  for (const char* fn : required) {
    RawField(L, -1, fn);
    const bool ok = lua_isfunction(L, -1);
    lua_pop(L, 1);
    if (!ok) throw Error(StrCat("Lua planner ", name, " has no function ", fn));
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "dcpp.planner");
  return vm;
}

void PushMethod(lua_State* L, const char* fn) {
  lua_getfield(L, LUA_REGISTRYINDEX, "dcpp.planner");
  RawField(L, -1, fn);
  lua_remove(L, -2);
}

}  // namespace

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

// ---- SavePlanner, LoadPlanner, ConvertPlanner ----

int64_t SavePlanner::peak_instructions() const { return vm_->peak_instructions(); }
int64_t SavePlanner::peak_bytes() const { return vm_->peak_bytes(); }
int64_t LoadPlanner::peak_instructions() const { return vm_->peak_instructions(); }
int64_t LoadPlanner::peak_bytes() const { return vm_->peak_bytes(); }
int64_t ConvertPlanner::peak_instructions() const { return vm_->peak_instructions(); }
int64_t ConvertPlanner::peak_bytes() const { return vm_->peak_bytes(); }

// ---- SavePlanner ----

SavePlanner::SavePlanner(std::unique_ptr<LuaVm> vm, std::string name)
    : vm_(std::move(vm)), name_(std::move(name)) {}
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
  return std::unique_ptr<SavePlanner>(new SavePlanner(std::move(vm), name));
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

// ---- LoadPlanner ----

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
      if (!w.key.empty()) SetStr(L, "key", w.key);
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

// ---- ConvertPlanner ----

ConvertPlanner::ConvertPlanner(std::unique_ptr<LuaVm> vm, std::string name, std::string source)
    : vm_(std::move(vm)), name_(std::move(name)), source_(std::move(source)) {}
ConvertPlanner::~ConvertPlanner() = default;

std::unique_ptr<ConvertPlanner> ConvertPlanner::Create(const std::string& script_path,
                                                       const PlannerLimits& limits) {
  auto [name, source] = ResolvePlanner(script_path);
  auto vm = LoadModule(name, source, {"convert"}, limits);
  auto p = std::unique_ptr<ConvertPlanner>(new ConvertPlanner(std::move(vm), name, source));
  lua_State* L = p->vm_->state();
  PushMethod(L, "save_global");
  p->has_save_global_ = lua_isfunction(L, -1);
  lua_pop(L, 1);
  return p;
}

std::map<std::string, std::string> ConvertPlanner::Options(
    const std::map<std::string, std::string>& set) {
  lua_State* L = vm_->state();
  const int top = lua_gettop(L);
  std::map<std::string, std::string> out;
  PushMethod(L, "options");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      if (lua_type(L, -2) == LUA_TSTRING) {
        const char* v = lua_tostring(L, -1);  // strings and numbers; false/nil-like -> ""
        out[lua_tostring(L, -2)] = v != nullptr ? v : "";
      }
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  for (const auto& [k, v] : set) {
    if (!out.count(k)) {
      std::string known;
      for (const auto& kv : out) known += (known.empty() ? "" : ", ") + kv.first;
      throw UnknownOptionError(StrCat("planner ", name_, " has no option '", k, "' (",
                         known.empty() ? "it takes none" : "its options: " + known, ")"));
    }
  }
  for (const auto& [k, v] : set) out[k] = v;
  return out;
}

std::vector<ConvertEntry> ConvertPlanner::Plan(const PlanContext& ctx, const proto::Metadata& md,
                                               std::vector<int64_t>* mesh) {
  lua_State* L = vm_->state();
  const int top = lua_gettop(L);
  const std::string where = "planner " + name_ + " convert";
  PushMethod(L, "convert");
  PushContext(L, ctx);
  PushMetadata(L, md);
  vm_->Call(2, 2, where);
  const int en = top + 1;
  if (!lua_istable(L, en)) throw Error(where + ": must return a list of entries");

  *mesh = ReadInts(L, en + 1, where + ": the mesh it returned");
  if (mesh->empty()) mesh->push_back(ctx.world_size);
  int64_t product = 1;
  for (int64_t m : *mesh) {
    DCPP_CHECK(m >= 1 && m <= ctx.world_size, where, ": the mesh it returned has a dimension of ", m,
               " ranks; the target world size is ", ctx.world_size);
    product *= m;
  }
  DCPP_CHECK(product == ctx.world_size && mesh->size() <= 2, where,
             ": the mesh it returned has ", product, " ranks in ", mesh->size(),
             " dimensions; the target world size is ", ctx.world_size, " (1-D or 2-D meshes)");

  std::map<std::string, const proto::TensorMeta*> tensors;
  for (const auto& t : md.tensors()) tensors[t.fqn()] = &t;
  std::set<std::string> blobs;
  for (const auto& b : md.bytes()) blobs.insert(b.fqn());

  std::vector<ConvertEntry> out;
  std::set<std::string> keys;
  const int n = static_cast<int>(lua_objlen(L, en));
  for (int i = 1; i <= n; ++i) {
    lua_rawgeti(L, en, i);
    const int it = lua_gettop(L);
    if (!lua_istable(L, it)) throw Error(StrCat(where, ": entry ", i, " is not a table"));
    ConvertEntry e;
    bool has_key = false, has_source = false;
    e.key = FieldString(L, it, "key", &has_key);
    DCPP_CHECK(has_key && !e.key.empty(), where, ": entry ", i, " has no `key` string");
    e.source = FieldString(L, it, "source", &has_source);
    if (!has_source) e.source = e.key;
    DCPP_CHECK(keys.insert(e.key).second, where, ": key '", e.key,
               "' is produced twice (the second time from '", e.source, "')");
    auto t = tensors.find(e.source);
    e.is_bytes = t == tensors.end();
    DCPP_CHECK(!e.is_bytes || blobs.count(e.source), where, ": key '", e.key, "' reads '",
               e.source, "', which the checkpoint does not have");
    if (!e.is_bytes) {
      std::vector<std::string> texts;
      RawField(L, it, "layout");
      if (lua_type(L, -1) == LUA_TSTRING) {
        texts.push_back(lua_tostring(L, -1));
      } else if (lua_istable(L, -1)) {
        for (int k = 1; k <= static_cast<int>(lua_objlen(L, -1)); ++k) {
          lua_rawgeti(L, -1, k);
          texts.push_back(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
          lua_pop(L, 1);
        }
      }
      lua_pop(L, 1);
      DCPP_CHECK(texts.size() == mesh->size(), where, ": key '", e.key, "' has ", texts.size(),
                 " placements for a mesh of ", mesh->size(), " dimensions (set `layout` to e.g. "
                 "\"Shard(0)\" or {\"Shard(0)\", \"Replicate()\"})");
      e.layout.mesh = *mesh;
      const int ndim = t->second->shape_size();
      for (const std::string& text : texts) {
        Placement p;
        try {
          p = Placement::Parse(text);
        } catch (const Error& err) {
          throw Error(StrCat(where, ": key '", e.key, "': ", err.what()));
        }
        if (p.kind == Placement::Kind::kShard && p.dim < 0) p.dim += ndim;
        DCPP_CHECK(p.kind != Placement::Kind::kShard || (p.dim >= 0 && p.dim < ndim), where,
                   ": key '", e.key, "' gets ", text, " but its tensor has ", ndim,
                   " dimension", ndim == 1 ? "" : "s", " (shape ",
                   WholeBox({t->second->shape().begin(), t->second->shape().end()}).ToString(), ")");
        e.layout.placements.push_back(p);
      }
    }
    out.push_back(std::move(e));
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  return out;
}

}  // namespace dcpp
