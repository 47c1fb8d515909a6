#include "core/planner/lua_vm.h"

#include <pthread.h>

#include <cstdlib>
#include <lua.hpp>

#include "core/base/error.h"

namespace dcpp {
namespace {

// The count hook runs every kCountStep instructions (fewer when the limit is smaller).
constexpr int kCountStep = 1000;
// Native stack kept free below the deepest Lua call: room for raising the error, the message
// handler's traceback (luaL_Buffer) and C++ unwinding.
constexpr uintptr_t kCStackReserve = 256 << 10;
// Where the thread's stack bounds are unknown: the depth allowed below Call().
constexpr uintptr_t kCStackFallbackDepth = 1 << 20;
// Once a call is past its memory ceiling, this much more is allowed so that the error
// message and traceback can still be built.
constexpr int64_t kMemorySlack = 1 << 20;

const char kRaiseInstructions[] =
    " (raise it with planner_instruction_limit in SaveOptions, LoadOptions or ConvertOptions, "
    "or convert --planner-instruction-limit; 0 = unlimited)";
const char kRaiseMemory[] =
    " (raise it with planner_memory_limit in SaveOptions, LoadOptions or ConvertOptions, or "
    "convert --planner-memory-limit; 0 = unlimited)";

thread_local LuaVm* t_current = nullptr;  // the LuaVm whose Call runs on this thread

// Message handler for lua_pcall: appends a traceback to the error message. After a Lua stack
// overflow only a few slots are left; if even those cannot be had, the message goes back as
// it is (it already names file and line).
int Traceback(lua_State* L) {
  if (!lua_checkstack(L, 4)) return 1;
  const char* msg = lua_tostring(L, 1);
  if (msg == nullptr) {
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

void OpenSandbox(lua_State* L) {
  luaL_openlibs(L);
  for (const char* name : {"os", "io", "debug", "package", "require", "ffi", "jit", "dofile",
                           "loadfile", "load", "loadstring", "module", "collectgarbage",
                           "getfenv", "setfenv", "newproxy"}) {
    lua_pushnil(L);
    lua_setglobal(L, name);
  }
  // string.dump would let a script produce bytecode; bytecode loading is not allowed anyway.
  lua_getglobal(L, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lua_pop(L, 1);
}

// The lowest native stack address the Lua calls of this thread may reach.
uintptr_t NativeStackFloor() {
  const auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  uintptr_t floor = here > kCStackFallbackDepth ? here - kCStackFallbackDepth : 0;
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0 && addr != nullptr) {
      const uintptr_t low = reinterpret_cast<uintptr_t>(addr) + kCStackReserve;
      if (low < here) floor = low;
    }
    pthread_attr_destroy(&attr);
  }
  return floor;
}

}  // namespace

void* LuaVm::Alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto* vm = static_cast<LuaVm*>(ud);
  const int64_t old = ptr != nullptr ? static_cast<int64_t>(osize) : 0;
  if (nsize == 0) {
    std::free(ptr);
    vm->bytes_ -= old;
    return nullptr;
  }
  const int64_t grow = static_cast<int64_t>(nsize) - old;
  if (grow > 0 && vm->in_call_ && vm->limits_.memory_bytes > 0) {
    const int64_t ceiling = vm->limits_.memory_bytes + (vm->memory_refused_ ? kMemorySlack : 0);
    if (vm->bytes_ + grow > ceiling) {
      vm->memory_refused_ = true;  // LuaJIT raises "not enough memory"
      return nullptr;
    }
  }
  void* p = std::realloc(ptr, nsize);
  if (p == nullptr) return nullptr;
  vm->bytes_ += grow;
  if (vm->bytes_ > vm->peak_bytes_) vm->peak_bytes_ = vm->bytes_;
  return p;
}

void LuaVm::Stop(lua_Debug* ar, const std::string& what) {
  {
    // The innermost frame with a line: the hooked function itself, or the Lua code that
    // called a C function.
    std::string where = script_;
    lua_Debug frame;
    for (int level = 0; lua_getstack(L_, level, &frame) != 0; ++level) {
      if (lua_getinfo(L_, "Sl", &frame) != 0 && frame.currentline > 0) {
        where = StrCat(frame.short_src, ":", frame.currentline);
        break;
      }
    }
    const std::string msg = where + ": " + what;
    lua_pushlstring(L_, msg.data(), msg.size());
  }
  // From now on every instruction raises again, so that a script cannot catch the error
  // with pcall and carry on.
  lua_sethook(L_, Hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
  lua_error(L_);
  std::abort();  // not reached: lua_error does not return
}

void LuaVm::Hook(lua_State* L, lua_Debug* ar) {
  LuaVm* vm = t_current;
  if (vm == nullptr || vm->L_ != L || !vm->in_call_) return;
  if (ar->event == LUA_HOOKCOUNT) {
    const int64_t limit = vm->limits_.instructions;
    vm->instructions_ += limit > 0 && limit < kCountStep ? limit : kCountStep;
    if (vm->instructions_ > vm->peak_instructions_) vm->peak_instructions_ = vm->instructions_;
    if (limit > 0 && vm->instructions_ > limit) {
      vm->Stop(ar, StrCat("exceeded the instruction limit of ", limit, kRaiseInstructions));
    }
    if (vm->limits_.memory_bytes > 0 && !vm->custom_alloc_ &&
        int64_t{lua_gc(L, LUA_GCCOUNT, 0)} * 1024 > vm->limits_.memory_bytes) {
      vm->memory_refused_ = true;
    }
    if (vm->memory_refused_) {  // refused earlier, and the script caught the error
      vm->Stop(ar, StrCat("exceeded the memory limit of ", vm->limits_.memory_bytes, " bytes",
                          kRaiseMemory));
    }
    return;
  }
  // A call: Lua functions called back from C functions (string.gsub, table.sort, ...) nest
  // on the native stack; stop before it runs out.
  if (reinterpret_cast<uintptr_t>(__builtin_frame_address(0)) < vm->stack_floor_) {
    vm->Stop(ar, "C stack overflow (too many nested calls through C functions such as "
                 "string.gsub callbacks)");
  }
}

LuaVm::LuaVm(const PlannerLimits& limits) : limits_(limits) {
  // A custom allocator counts the state's memory. LuaJIT accepts one only in GC64 builds
  // (Debian's x86-64 luajit2 is one); otherwise the count hook checks lua_gc's count instead.
  L_ = lua_newstate(&LuaVm::Alloc, this);
  custom_alloc_ = L_ != nullptr;
  if (L_ == nullptr) L_ = luaL_newstate();
  DCPP_CHECK(L_ != nullptr, "LuaJIT: cannot create a Lua state (out of memory)");
  OpenSandbox(L_);
  // Compiled traces never call hooks, so the interpreter alone runs planners. (After
  // OpenSandbox: opening the jit library turns the JIT on.)
  luaJIT_setmode(L_, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
}

LuaVm::~LuaVm() { lua_close(L_); }

void LuaVm::Run(std::string_view source, const std::string& chunk_name, int nresults) {
  script_ = chunk_name;
  // "@" marks a file name: Lua prints it in messages ("planners/x.lua:12: ...") and, past
  // LUA_IDSIZE characters, keeps its end ("...dir/x.lua:12:"). Callers name the full path.
  const std::string name = "@" + chunk_name;
  // Text mode only ("t"): a precompiled bytecode chunk could break the sandbox.
  if (luaL_loadbufferx(L_, source.data(), source.size(), name.c_str(), "t") != 0) {
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "(unknown)";
    lua_pop(L_, 1);
    throw Error("Lua planner " + chunk_name + " failed to load: " + msg);
  }
  Call(0, nresults, "script " + chunk_name);
}

void LuaVm::Call(int nargs, int nresults, const std::string& what) {
  const int base = lua_gettop(L_) - nargs;  // index of the function
  lua_pushcfunction(L_, Traceback);
  lua_insert(L_, base);

  LuaVm* const outer = t_current;
  t_current = this;
  in_call_ = true;
  memory_refused_ = false;
  instructions_ = 0;
  stack_floor_ = NativeStackFloor();
  const int64_t limit = limits_.instructions;
  lua_sethook(L_, Hook, LUA_MASKCOUNT | LUA_MASKCALL,
              limit > 0 && limit < kCountStep ? static_cast<int>(limit) : kCountStep);
  const int rc = lua_pcall(L_, nargs, nresults, base);
  lua_sethook(L_, nullptr, 0, 0);
  in_call_ = false;
  t_current = outer;

  lua_remove(L_, base);
  if (rc != 0) {
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "(unknown)";
    lua_pop(L_, 1);
    if (rc == LUA_ERRMEM && memory_refused_) {
      // LuaJIT raises "not enough memory" without calling the message handler: no line.
      msg = StrCat(script_, ": exceeded the memory limit of ", limits_.memory_bytes, " bytes",
                   kRaiseMemory);
    } else if (rc == LUA_ERRERR) {
      msg += " (the message handler failed too, e.g. after a stack overflow)";
    }
    memory_refused_ = false;
    throw Error("Lua " + what + " failed: " + msg);
  }
}

}  // namespace dcpp
