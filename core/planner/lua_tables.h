// Lua <-> C++ marshalling shared by the planners (SavePlanner, LoadPlanner, ConvertPlanner).
// Internal to //core/planner (listed in its srcs, not hdrs): planner.h is the public interface.
//
// Pushes what a script is given (ctx, md, plan items) onto a planner's Lua stack, reads back
// the tables it returns with raw access (metatables a script put on them are ignored, so no
// script code runs outside LuaVm's protected, bounded calls), and loads a script's module
// table with the global `dcpp` helper table installed. Every function works on the stack of
// the lua_State it is given; like the planners, not thread-safe: one state per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <lua.hpp>

#include "core/format/metadata.pb.h"
#include "core/format/plan.pb.h"
#include "core/planner/limits.h"
#include "core/planner/lua_vm.h"
#include "core/planner/planner.h"

namespace dcpp {

// ---- C++ -> Lua ----

// Fields of the table on top of the stack.
void SetStr(lua_State* L, const char* k, const std::string& v);
void SetNum(lua_State* L, const char* k, double v);
void SetInts(lua_State* L, const char* k, const std::vector<int64_t>& v);

// ctx = {rank, world_size, mesh, thread_count, allow_partial_load, first_file_index,
//        comm_device, options, overlap}
void PushContext(lua_State* L, const PlanContext& ctx);

// md = {tensors = {[fqn] = {dtype, shape, chunks = {{offsets, sizes}, ...}}},
//       bytes = {[fqn] = {length}}, world_size}
void PushMetadata(lua_State* L, const proto::Metadata& md);

// The items of `plan` as a list of {fqn, kind, dtype, shape, offsets, sizes, nbytes, index,
// file}; `index` is the item's own index + 1, by which ReadItems finds it again.
void PushItems(lua_State* L, const proto::SavePlan& plan);

// ---- Lua -> C++ (raw access) ----

// The integers of the list at `idx` (empty if it is not a table); throws dcpp::Error naming
// `what` and the element that is not an integer within int64's range.
std::vector<int64_t> ReadInts(lua_State* L, int idx, const std::string& what);

// Pushes field `k` of the table at `idx`, read without metamethods.
void RawField(lua_State* L, int idx, const char* k);
// Field `k` of the table at `idx` if it is a string (`*present` says whether it was).
std::string FieldString(lua_State* L, int idx, const char* k, bool* present);
// Field `k` of the table at `idx` if it is an integer within int64's range; false otherwise.
bool FieldInt(lua_State* L, int idx, const char* k, int64_t* out);

// Reads back a list of items returned by a planner; each must carry a valid `index` into
// `source` (the items the planner was given), which supplies every field the planner may not
// change. `fqn` and `file` are taken from the planner; `file` is required when `need_file`.
// Throws dcpp::Error starting with `where` for a malformed list.
proto::SavePlan ReadItems(lua_State* L, int idx, const proto::SavePlan& source,
                          const std::string& where, bool need_file);

// ---- the script's module table ----

// {name for messages, source} of the script at `path`, or of the embedded planner `embedded`
// when `path` is empty.
std::pair<std::string, std::string> ReadScript(const std::string& path, const char* embedded);

// A LuaVm (with `limits`) that has run `source` and holds a copy of its module table's fields
// in the registry under "dcpp.planner"; throws dcpp::Error naming `name` if the script does
// not return a table or lacks one of the `required` functions.
std::unique_ptr<LuaVm> LoadModule(const std::string& name, const std::string& source,
                                  const std::vector<const char*>& required,
                                  const PlannerLimits& limits);

// Pushes field `fn` of the module table LoadModule kept (nil if the script has none).
void PushMethod(lua_State* L, const char* fn);

}  // namespace dcpp
