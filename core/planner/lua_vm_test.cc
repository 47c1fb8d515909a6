#include "core/planner/lua_vm.h"

#include <gtest/gtest.h>

#include <lua.hpp>

#include "core/error.h"

namespace dcpp {
namespace {

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LuaVm, CallsAScriptFunctionThroughTheCApi) {
  LuaVm vm;
  vm.Run("local P = {}\nfunction P.add(a, b) return a + b end\nreturn P\n", "planners/p.lua", 1);
  lua_State* L = vm.state();
  ASSERT_TRUE(lua_istable(L, -1));
  lua_getfield(L, -1, "add");
  lua_pushinteger(L, 40);
  lua_pushinteger(L, 2);
  vm.Call(2, 1, "planner add");
  EXPECT_EQ(lua_tointeger(L, -1), 42);
}

TEST(LuaVm, RuntimeErrorNamesFileLineAndTraceback) {
  LuaVm vm;
  vm.Run("local P = {}\nfunction P.f(x)\n  return x.missing.field\nend\nreturn P\n",
         "my_planner.lua", 1);
  lua_State* L = vm.state();
  lua_getfield(L, -1, "f");
  lua_pushinteger(L, 1);
  const std::string err = ErrorOf([&] { vm.Call(1, 1, "planner f"); });
  EXPECT_NE(err.find("my_planner.lua:3:"), std::string::npos) << err;
  EXPECT_NE(err.find("stack traceback"), std::string::npos) << err;
  EXPECT_NE(err.find("planner f"), std::string::npos) << err;
}

TEST(LuaVm, SyntaxErrorNamesFileAndLine) {
  LuaVm vm;
  const std::string err = ErrorOf([&] { vm.Run("local x = 1\nif x then\n", "broken.lua", 0); });
  EXPECT_NE(err.find("broken.lua:3:"), std::string::npos) << err;
}

TEST(LuaVm, SandboxHasNoOsIoOrRequire) {
  LuaVm vm;
  vm.Run("return os == nil and io == nil and require == nil and loadstring == nil "
         "and string.dump == nil and math.max(1, 2) == 2",
         "probe.lua", 1);
  EXPECT_TRUE(lua_toboolean(vm.state(), -1));
  const std::string err = ErrorOf([&] { vm.Run("os.execute('true')", "evil.lua", 0); });
  EXPECT_NE(err.find("evil.lua:1:"), std::string::npos) << err;
}

}  // namespace
}  // namespace dcpp
