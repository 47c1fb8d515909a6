// LuaVm: one sandboxed, bounded LuaJIT state that runs a planner script.
//
// A script is loaded under a chunk name (its file path, or "planners/default_save.lua" for an
// embedded default) so that every error names the script and line. The sandbox keeps the
// safe parts of the standard library (base functions without load*/dofile, string, table,
// math, bit) and removes os, io, debug, package/require, ffi and jit.
//
// Call() runs a global or table function in protected mode: any Lua error, including one
// raised by a C++ helper, becomes a dcpp::Error carrying "file:line: message" and the Lua
// traceback. Each call is bounded (PlannerLimits, core/planner/limits.h):
//   - instructions: a count hook stops a call past the limit ("exceeded the instruction
//     limit of N", with the line it was at). The JIT is off in planner states, because
//     LuaJIT's compiled loops never call hooks; planners are small and run once per save.
//   - memory: the state's allocator refuses to grow it past the ceiling while a call runs
//     ("exceeded the memory limit of N bytes"). Outside calls (the engine pushing arguments,
//     reading results) nothing is refused, so the engine's own Lua API calls cannot fail.
//   - Lua stack: LuaJIT's own limit gives "stack overflow" at the recursing line.
//   - C stack: recursion through C functions (a string.gsub callback that calls gsub) is
//     stopped by a call hook when less than 256 KiB of the thread's native stack is left,
//     instead of overflowing it.
// Not thread-safe: use one LuaVm per thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/planner/limits.h"

struct lua_State;
struct lua_Debug;

namespace dcpp {

class LuaVm {
 public:
  explicit LuaVm(const PlannerLimits& limits = {});
  ~LuaVm();
  LuaVm(const LuaVm&) = delete;
  LuaVm& operator=(const LuaVm&) = delete;

  lua_State* state() const { return L_; }

  // Compiles and runs `source` as chunk `chunk_name`; its return values are left on the stack
  // (`nresults` of them, LUA_MULTRET = -1 for all). Throws dcpp::Error on a syntax or runtime
  // error, naming the chunk and line.
  void Run(std::string_view source, const std::string& chunk_name, int nresults);

  // Calls the function at stack index `-(nargs + 1)` with `nargs` arguments above it, in
  // protected mode with a traceback and within the limits; leaves `nresults` results.
  // `what` names the call in errors (e.g. "planner x.lua save_global"). Throws dcpp::Error
  // naming the script, line and limit when the call exceeds one.
  void Call(int nargs, int nresults, const std::string& what);

  const PlannerLimits& limits() const { return limits_; }
  // The most instructions one call has run so far (in steps of 1,000), and the most bytes
  // the state has held; for benchmarks and tests.
  int64_t peak_instructions() const { return peak_instructions_; }
  int64_t peak_bytes() const { return peak_bytes_; }

 private:
  static void* Alloc(void* ud, void* ptr, size_t osize, size_t nsize);
  static void Hook(lua_State* L, lua_Debug* ar);
  // Raises a Lua error "<where the script is>: <what>" from inside a hook.
  [[noreturn]] void Stop(lua_Debug* ar, const std::string& what);

  PlannerLimits limits_;
  lua_State* L_ = nullptr;
  std::string script_;          // the chunk name of the last Run, for messages
  bool custom_alloc_ = false;   // false: LuaJIT refused our allocator (not a GC64 build)
  bool in_call_ = false;        // limits apply only while a Call runs
  bool memory_refused_ = false; // the allocator refused an allocation in this call
  int64_t bytes_ = 0;           // bytes held by the state (custom allocator only)
  int64_t peak_bytes_ = 0;
  int64_t instructions_ = 0;    // in this call
  int64_t peak_instructions_ = 0;
  uintptr_t stack_floor_ = 0;   // a call hook below this native stack address stops the call
};

}  // namespace dcpp
