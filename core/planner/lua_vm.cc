#include "core/planner/lua_vm.h"

#include <lua.hpp>

#include "core/error.h"

namespace dcpp {
namespace {

// Message handler for lua_pcall: appends a traceback to the error message.
int Traceback(lua_State* L) {
  const char* msg = lua_tostring(L, 1);
  if (msg == nullptr) {
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  // debug.traceback was removed from the sandbox; use the C API's equivalent via the saved
  // copy kept in the registry.
  lua_getfield(L, LUA_REGISTRYINDEX, "dcpp.traceback");
  lua_pushstring(L, msg);
  lua_pushinteger(L, 2);
  lua_call(L, 2, 1);
  return 1;
}

void OpenSandbox(lua_State* L) {
  luaL_openlibs(L);
  // Keep debug.traceback for our message handler before dropping the debug library.
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_setfield(L, LUA_REGISTRYINDEX, "dcpp.traceback");
  lua_pop(L, 1);
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

}  // namespace

LuaVm::LuaVm() : L_(luaL_newstate()) {
  DCPP_CHECK(L_ != nullptr, "LuaJIT: cannot create a Lua state (out of memory)");
  OpenSandbox(L_);
}

LuaVm::~LuaVm() { lua_close(L_); }

void LuaVm::Run(std::string_view source, const std::string& chunk_name, int nresults) {
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
  const int rc = lua_pcall(L_, nargs, nresults, base);
  lua_remove(L_, base);
  if (rc != 0) {
    std::string msg = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "(unknown)";
    lua_pop(L_, 1);
    throw Error("Lua " + what + " failed: " + msg);
  }
}

}  // namespace dcpp
