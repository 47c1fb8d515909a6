// LuaVm: one sandboxed LuaJIT state that runs a planner script.
//
// A script is loaded under a chunk name (its file path, or "planners/default_save.lua" for an
// embedded default) so that every error names the script and line. The sandbox keeps the
// safe parts of the standard library (base functions without load*/dofile, string, table,
// math, bit) and removes os, io, debug, package/require, ffi and jit.
//
// Call() runs a global or table function in protected mode: any Lua error, including one
// raised by a C++ helper, becomes a dcpp::Error carrying "file:line: message" and the Lua
// traceback. Not thread-safe: use one LuaVm per thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

struct lua_State;

namespace dcpp {

class LuaVm {
 public:
  LuaVm();
  ~LuaVm();
  LuaVm(const LuaVm&) = delete;
  LuaVm& operator=(const LuaVm&) = delete;

  lua_State* state() const { return L_; }

  // Compiles and runs `source` as chunk `chunk_name`; its return values are left on the stack
  // (`nresults` of them, LUA_MULTRET = -1 for all). Throws dcpp::Error on a syntax or runtime
  // error, naming the chunk and line.
  void Run(std::string_view source, const std::string& chunk_name, int nresults);

  // Calls the function at stack index `-(nargs + 1)` with `nargs` arguments above it, in
  // protected mode with a traceback; leaves `nresults` results. `what` names the call in
  // errors (e.g. "planner save_global").
  void Call(int nargs, int nresults, const std::string& what);

 private:
  lua_State* L_;
};

}  // namespace dcpp
