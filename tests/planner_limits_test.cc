// Runaway planner scripts through the public API: an endless loop, an allocation bomb, Lua
// recursion, recursion through string.gsub and metatables on a returned plan each fail a
// save, load or convert with a dcpp::Error naming the script, on every rank, before anything
// is written; the checkpoint already in the folder stays byte for byte and still loads. A
// raised limit lets a heavier but finite planner through.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/dcpp.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"
#include "core/tools/convert.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::Joined;
using testing::ReadFile;
using testing::RunRanks;
using testing::TempDir;
using testing::WriteFile;

constexpr int kWorld = 2;
const at::Tensor& Full() {
  static const at::Tensor t = at::arange(48, at::kFloat).reshape({8, 6});
  return t;
}

// A save planner with `local_body` run at the start of save_local and `global_body` at the
// start of save_global; otherwise it writes every distinct chunk once, in its holder's file.
std::string SavePlannerWith(const std::string& local_body, const std::string& global_body) {
  return "local P = {}\n"
         "function P.save_local(ctx, items)\n" + local_body + "\n  return items\nend\n"
         "function P.save_global(ctx, plans)\n" + global_body + "\n"
         "  local seen = {}\n"
         "  for r, items in ipairs(plans) do\n"
         "    local keep = {}\n"
         "    for _, it in ipairs(items) do\n"
         "      local k = it.fqn .. (it.offsets and dcpp.box_key(it.offsets, it.sizes) or '')\n"
         "      if not seen[k] then\n"
         "        seen[k] = true\n"
         "        it.file = string.format('__%d_%d.distcp', r - 1, ctx.first_file_index)\n"
         "        keep[#keep + 1] = it\n"
         "      end\n"
         "    end\n"
         "    plans[r] = keep\n"
         "  end\n"
         "  return plans\n"
         "end\n"
         "return P\n";
}

struct Runaway {
  const char* name;
  std::string local_body, global_body;  // save_local runs on every rank, save_global on rank 0
  std::string expect;
};

std::vector<Runaway> Runaways() {
  return {
      {"loop", "  while true do end", "", "exceeded the instruction limit of 1000000"},
      {"bomb", "", "  local t = {}\n  while true do t[#t + 1] = string.rep('x', 1e6) .. #t end",
       "exceeded the memory limit of 33554432 bytes"},
      {"recursion", "", "  local function f() return 1 + f() end\n  f()", "stack overflow"},
      {"gsub", "  local function f(s) return (s:gsub('.', f)) end\n  f('ab')", "",
       "C stack overflow"},
      {"metatable", "",
       "  local trap = {__index = function() error('trap') end, __len = function() error('trap') end}\n"
       "  do return setmetatable({}, trap) end",
       "must return one plan per rank"},
  };
}

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// Each rank's chunk of the checkpoint in `dir`, loaded over kWorld ranks.
std::vector<at::Tensor> LoadAll(const std::string& dir, std::string* step) {
  std::vector<at::Tensor> chunks(kWorld);
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    StateDict sd;
    chunks[rank] = at::zeros({4, 6});
    sd.Add(TensorEntry{"w", at::kFloat, {8, 6},
                       {{BoxForRank({8, 6}, Layout::Sharded(kWorld, 0), rank), chunks[rank]}}});
    sd.AddBytes("step", "");
    LoadOptions lo;
    lo.comm = &comm;
    load(sd, dir, lo);
    if (rank == 0) *step = sd.FindBytes("step")->data;
  });
  EXPECT_EQ(Joined(errors), "");
  return chunks;
}

// Saves Full() * scale, FSDP over kWorld ranks, with `so` (comm set per rank).
std::vector<std::string> SaveScaled(const std::string& dir, float scale, const std::string& step,
                                    SaveOptions so) {
  return RunRanks(kWorld, [&](int rank, Comm& comm) {
    StateDict sd;
    sd.AddSharded("w", Full() * scale, Layout::Sharded(kWorld, 0), rank);
    sd.AddBytes("step", step);
    SaveOptions mine = so;  // each rank its own copy: the ranks are threads
    mine.comm = &comm;
    save(sd, dir, mine);
  });
}

TEST(PlannerLimits, RunawaySavePlannersFailOnEveryRankAndLeaveTheCheckpointAsItWas) {
  TempDir dir;
  const std::string ckpt = dir / "ckpt";
  ASSERT_EQ(Joined(SaveScaled(ckpt, 1, "1", {})), "");
  const std::string md = ReadFile(ckpt + "/.metadata");
  const std::vector<std::string> files = Files(ckpt);

  for (const Runaway& r : Runaways()) {
    SCOPED_TRACE(r.name);
    const std::string script = dir / (std::string(r.name) + ".lua");
    WriteFile(script, SavePlannerWith(r.local_body, r.global_body));
    SaveOptions so;
    so.planner = script;
    so.planner_instruction_limit = 1'000'000;
    so.planner_memory_limit = 32 << 20;
    const auto errors = SaveScaled(ckpt, 2, "2", so);
    for (int rank = 0; rank < kWorld; ++rank) {
      EXPECT_HAS(errors[rank], script);
      EXPECT_HAS(errors[rank], r.expect);
    }
    EXPECT_EQ(ReadFile(ckpt + "/.metadata"), md);
    EXPECT_EQ(Files(ckpt), files);
  }
  std::string step;
  const auto chunks = LoadAll(ckpt, &step);
  EXPECT_EQ(step, "1");
  for (int rank = 0; rank < kWorld; ++rank) {
    EXPECT_TRUE(at::equal(chunks[rank], Full().narrow(0, 4 * rank, 4))) << rank;
  }
}

TEST(PlannerLimits, ARaisedLimitLetsAHeavierSavePlannerThrough) {
  TempDir dir;
  const std::string ckpt = dir / "ckpt";
  const std::string script = dir / "heavy.lua";
  // ~6 * 10^6 instructions in save_global.
  WriteFile(script, SavePlannerWith("", "  local s = 0\n  for i = 1, 2e6 do s = s + i end"));
  SaveOptions so;
  so.planner = script;
  so.planner_instruction_limit = 1'000'000;
  const auto errors = SaveScaled(ckpt, 3, "3", so);
  for (int rank = 0; rank < kWorld; ++rank) {
    EXPECT_HAS(errors[rank], "heavy.lua:8: exceeded the instruction limit of 1000000");
  }
  so.planner_instruction_limit = 100'000'000;
  ASSERT_EQ(Joined(SaveScaled(ckpt, 3, "3", so)), "");
  std::string step;
  const auto chunks = LoadAll(ckpt, &step);
  EXPECT_EQ(step, "3");
  EXPECT_TRUE(at::equal(chunks[1], Full().narrow(0, 4, 4) * 3));
}

TEST(PlannerLimits, RunawayLoadPlannerFailsOnEveryRankAndFillsNothing) {
  TempDir dir;
  const std::string ckpt = dir / "ckpt";
  ASSERT_EQ(Joined(SaveScaled(ckpt, 1, "1", {})), "");
  const std::string script = dir / "spin_load.lua";
  WriteFile(script, "local P = {}\nfunction P.load_local(ctx, targets, md)\n"
                    "  local t = {}\n  while true do t[#t + 1] = string.rep('x', 1e6) .. #t end\n"
                    "end\nreturn P\n");
  std::vector<at::Tensor> chunks(kWorld);
  const auto errors = RunRanks(kWorld, [&](int rank, Comm& comm) {
    chunks[rank] = at::zeros({4, 6});
    StateDict sd;
    sd.Add(TensorEntry{"w", at::kFloat, {8, 6},
                       {{BoxForRank({8, 6}, Layout::Sharded(kWorld, 0), rank), chunks[rank]}}});
    LoadOptions lo;
    lo.comm = &comm;
    lo.planner = script;
    lo.planner_memory_limit = 48 << 20;
    load(sd, ckpt, lo);
  });
  for (int rank = 0; rank < kWorld; ++rank) {
    EXPECT_HAS(errors[rank], script + " load_local");
    EXPECT_HAS(errors[rank], "exceeded the memory limit of 50331648 bytes");
    EXPECT_TRUE(at::equal(chunks[rank], at::zeros({4, 6}))) << rank;
  }
}

TEST(PlannerLimits, RunawayConversionPlannerLeavesTheDestinationAsItWas) {
  TempDir dir;
  ASSERT_EQ(Joined(SaveScaled(dir / "src", 5, "5", {})), "");
  const std::string dst = dir / "dst";
  ASSERT_EQ(Joined(SaveScaled(dst, 1, "1", {})), "");
  const std::string md = ReadFile(dst + "/.metadata");
  const std::vector<std::string> files = Files(dst);

  // P.convert loops; or P.convert is fine and P.save_global (the placement) recurses through
  // string.gsub.
  const std::string convert_ok =
      "function P.convert(ctx, md)\n"
      "  return {{key = 'w', source = 'w', layout = 'Shard(0)'}, {key = 'step', source = 'step'}}\n"
      "end\n";
  const std::pair<std::string, std::string> scripts[] = {
      {"local P = {}\nfunction P.convert(ctx, md)\n  while true do end\nend\nreturn P\n",
       "spin.lua:3: exceeded the instruction limit of 1000000"},
      {"local P = {}\n" + convert_ok +
           "function P.save_global(ctx, plans)\n"
           "  local function f(s) return (s:gsub('.', f)) end\n  return f('ab')\nend\nreturn P\n",
       "C stack overflow"},
  };
  for (const auto& [text, expect] : scripts) {
    const std::string script = dir / "spin.lua";
    WriteFile(script, text);
    ConvertOptions opt;
    opt.planner = script;
    opt.world_size = kWorld;
    opt.overwrite = true;
    opt.planner_instruction_limit = 1'000'000;
    const std::string err = ErrorOf([&] { convert(dir / "src", dst, opt); });
    EXPECT_HAS(err, script);
    EXPECT_HAS(err, expect);
    EXPECT_EQ(ReadFile(dst + "/.metadata"), md);
    EXPECT_EQ(Files(dst), files);
  }
  std::string step;
  const auto chunks = LoadAll(dst, &step);
  EXPECT_EQ(step, "1");
  EXPECT_TRUE(at::equal(chunks[0], Full().narrow(0, 0, 4)));
}

}  // namespace
}  // namespace dcpp
