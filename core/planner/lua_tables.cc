// The marshalling of lua_tables.h: the helpers a script calls (the global `dcpp` table), the
// tables pushed for it, raw reads of what it returns, and the loading of its module table.
#include "core/planner/lua_tables.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <lua.hpp>

#include "core/base/error.h"
#include "core/model/box.h"
#include "core/planner/lua_vm.h"

namespace dcpp {
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

// For the `dcpp` helpers called from Lua: a Lua error naming the helper.
std::vector<int64_t> ReadIntsArg(lua_State* L, int idx, const char* helper) {
  std::vector<int64_t> out;
  int bad = 0;
  if (!TryReadInts(L, idx, &out, &bad)) {
    luaL_error(L, "%s: argument %d, element %d is not an integer within int64's range", helper, idx, bad);
  }
  return out;
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

}  // namespace

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
    if (!has_fqn) throw Error(StrCat(where, ": item ", i, " has no `fqn` string"));  // ("" is a key)
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

}  // namespace dcpp
