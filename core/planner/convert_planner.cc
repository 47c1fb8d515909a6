// ConvertPlanner: runs a conversion script's convert (target key and layout of every saved
// key) and reads its options, validating both against the checkpoint.
#include "core/planner/planner.h"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <lua.hpp>

#include "core/base/error.h"
#include "core/model/box.h"
#include "core/model/layout.h"
#include "core/planner/lua_tables.h"
#include "core/planner/lua_vm.h"

namespace dcpp {

int64_t ConvertPlanner::peak_instructions() const { return vm_->peak_instructions(); }
int64_t ConvertPlanner::peak_bytes() const { return vm_->peak_bytes(); }

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
    DCPP_CHECK(has_key, where, ": entry ", i, " has no `key` string");  // ("" is a key)
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
