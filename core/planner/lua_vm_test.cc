#include "core/planner/lua_vm.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <chrono>
#include <functional>
#include <lua.hpp>

#include "core/base/error.h"

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

// ---- limits (PlannerLimits): every runaway script ends in an error naming it ----

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

PlannerLimits Limits(int64_t instructions, int64_t memory_bytes) {
  PlannerLimits l;
  l.instructions = instructions;
  l.memory_bytes = memory_bytes;
  return l;
}

TEST(LuaVmLimits, EndlessLoopStopsAtTheInstructionLimitNamingScriptAndLine) {
  LuaVm vm(Limits(2'000'000, 0));
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = ErrorOf([&] { vm.Run("local x = 0\nwhile true do\n  x = x + 1\nend\n", "planners/spin.lua", 0); });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(Has(err, "planners/spin.lua:")) << err;
  EXPECT_TRUE(Has(err, "exceeded the instruction limit of 2000000")) << err;
  EXPECT_TRUE(Has(err, "planner_instruction_limit")) << err;
  EXPECT_TRUE(Has(err, "spin.lua:2:") || Has(err, "spin.lua:3:")) << err;  // inside the loop
  EXPECT_GT(vm.peak_instructions(), 2'000'000);
  EXPECT_LE(vm.peak_instructions(), 2'001'000);
  EXPECT_LT(secs, 5.0);
}

TEST(LuaVmLimits, BareWhileTrueIsStoppedToo) {
  LuaVm vm(Limits(100'000, 0));
  const std::string err = ErrorOf([&] { vm.Run("while true do end", "bare.lua", 0); });
  EXPECT_TRUE(Has(err, "bare.lua:1: exceeded the instruction limit of 100000")) << err;
}

TEST(LuaVmLimits, PcallCannotSwallowTheLimit) {
  LuaVm vm(Limits(100'000, 0));
  const std::string err = ErrorOf([&] {
    vm.Run("local function g() while true do pcall(g) end end\n"
           "while true do pcall(function() while true do end end) pcall(g) end\n",
           "sly.lua", 0);
  });
  EXPECT_TRUE(Has(err, "sly.lua:") && Has(err, "exceeded the instruction limit")) << err;
}

TEST(LuaVmLimits, TheLimitIsPerCallAndARaisedLimitLetsHeavierWorkPass) {
  // About 3 instructions per iteration: 10^6 iterations need more than 10^6 instructions.
  const std::string heavy = "local P = {}\nfunction P.work(n) local s = 0 for i = 1, n do s = s + i end "
                            "return s end\nreturn P\n";
  for (int64_t limit : {int64_t{1'000'000}, int64_t{50'000'000}, int64_t{0}}) {
    LuaVm vm(Limits(limit, 0));
    vm.Run(heavy, "heavy.lua", 1);
    lua_State* L = vm.state();
    for (int round = 0; round < 3; ++round) {  // each call gets the whole limit
      lua_getfield(L, -1, "work");
      lua_pushinteger(L, 1'000'000);
      const std::string err = ErrorOf([&] { vm.Call(1, 1, "planner heavy.lua work"); });
      if (limit == 1'000'000) {
        EXPECT_TRUE(Has(err, "heavy.lua:2: exceeded the instruction limit of 1000000")) << err;
        EXPECT_TRUE(Has(err, "planner heavy.lua work")) << err;
      } else {
        ASSERT_EQ(err, "") << limit;
        EXPECT_EQ(lua_tonumber(L, -1), 500000500000.0);
        lua_pop(L, 1);
      }
    }
  }
}

const char kAllocationBomb[] =
    "local t = {}\nwhile true do\n  t[#t + 1] = string.rep('x', 1e6) .. #t\nend\n";

TEST(LuaVmLimits, AllocationBombStopsAtTheMemoryCeiling) {
  LuaVm vm(Limits(0, 64 << 20));
  const std::string err = ErrorOf([&] { vm.Run(kAllocationBomb, "planners/bomb.lua", 0); });
  EXPECT_TRUE(Has(err, "planners/bomb.lua")) << err;
  EXPECT_TRUE(Has(err, "exceeded the memory limit of 67108864 bytes")) << err;
  EXPECT_TRUE(Has(err, "planner_memory_limit")) << err;
  EXPECT_LE(vm.peak_bytes(), (64 << 20) + (1 << 20));
  EXPECT_GT(vm.peak_bytes(), 60 << 20);
}

TEST(LuaVmLimits, PcallCannotSwallowTheMemoryCeiling) {
  LuaVm vm(Limits(0, 32 << 20));
  const std::string err = ErrorOf([&] {
    vm.Run(std::string("local function bomb()\n") + kAllocationBomb + "end\n"
           "while true do pcall(bomb) end\n", "sly_bomb.lua", 0);
  });
  EXPECT_TRUE(Has(err, "sly_bomb.lua") && Has(err, "exceeded the memory limit of 33554432")) << err;
}

TEST(LuaVmLimits, ARaisedCeilingLetsABiggerTablePass) {
  // ~48 MiB of live strings.
  const std::string big = "local t = {} for i = 1, 48 do t[i] = string.rep('y', 1048576) .. i end return #t";
  {
    LuaVm vm(Limits(0, 16 << 20));
    const std::string err = ErrorOf([&] { vm.Run(big, "big.lua", 1); });
    EXPECT_TRUE(Has(err, "big.lua") && Has(err, "exceeded the memory limit of 16777216")) << err;
  }
  for (int64_t ceiling : {int64_t{256} << 20, int64_t{0}}) {
    LuaVm vm(Limits(0, ceiling));
    ASSERT_EQ(ErrorOf([&] { vm.Run(big, "big.lua", 1); }), "") << ceiling;
    EXPECT_EQ(lua_tointeger(vm.state(), -1), 48);
    EXPECT_GT(vm.peak_bytes(), 48 << 20);
  }
}

TEST(LuaVmLimits, EngineSidePushesAreNeverRefused) {
  // Outside Call the ceiling does not apply: arguments bigger than it can be pushed.
  LuaVm vm(Limits(0, 8 << 20));
  vm.Run("return function(t) return #t end", "len.lua", 1);
  lua_State* L = vm.state();
  lua_createtable(L, 1 << 20, 0);  // 16 MiB of array slots
  for (int i = 1; i <= (1 << 20); ++i) {
    lua_pushinteger(L, i);
    lua_rawseti(L, -2, i);
  }
  EXPECT_EQ(ErrorOf([&] { vm.Call(1, 1, "len"); }), "");
  EXPECT_EQ(lua_tointeger(L, -1), 1 << 20);
}

TEST(LuaVmLimits, LuaRecursionReportsStackOverflowWithFileAndLine) {
  LuaVm vm;
  const std::string err = ErrorOf([&] {
    vm.Run("local x = 1\nlocal function f() return 1 + f() end\nf()\n", "planners/rec.lua", 0);
  });
  EXPECT_TRUE(Has(err, "planners/rec.lua:2:") && Has(err, "stack overflow")) << err;
  EXPECT_FALSE(Has(err, "error in error handling")) << err;
}

const char kGsubRecursion[] = "local x = 1\nlocal function f(s) return (s:gsub('.', f)) end\nf('ab')\n";

TEST(LuaVmLimits, RecursionThroughGsubIsACleanError) {
  LuaVm vm;
  const std::string err = ErrorOf([&] { vm.Run(kGsubRecursion, "planners/gsub.lua", 0); });
  EXPECT_TRUE(Has(err, "planners/gsub.lua:2:") && Has(err, "C stack overflow")) << err;
  // The state is still usable afterwards.
  vm.Run("return 6 * 7", "after.lua", 1);
  EXPECT_EQ(lua_tointeger(vm.state(), -1), 42);
}

TEST(LuaVmLimits, RecursionThroughCFunctionsOnASmallThreadStack) {
  // A 1 MiB thread stack (the engine may plan on any thread): the bound follows the stack.
  struct Result { std::string err; } result;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1 << 20);
  pthread_t thread;
  auto body = [](void* arg) -> void* {
    LuaVm vm;
    static_cast<Result*>(arg)->err = ErrorOf([&] {
      vm.Run("local function f(a, b) table.sort({3, 2, 1}, f) return a < b end\n"
             "table.sort({2, 1}, f)\n", "sort.lua", 0);
    });
    return nullptr;
  };
  ASSERT_EQ(pthread_create(&thread, &attr, body, &result), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_TRUE(Has(result.err, "sort.lua:1:") && Has(result.err, "C stack overflow")) << result.err;
}

}  // namespace
}  // namespace dcpp

