// LoadPlanner's optional load_broadcast: the default planner's decision (which regions, which
// roots, when) and the engine's validation of what a script returns.
#include "core/planner/planner.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::TempDir;

LoadWant Want(const std::string& fqn, std::vector<int64_t> offsets, std::vector<int64_t> sizes,
              const std::string& dtype = "float32", const std::string& key = "") {
  LoadWant w;
  w.fqn = fqn;
  w.key = key.empty() ? fqn : key;
  w.dtype = dtype;
  w.box = Box{std::move(offsets), std::move(sizes)};
  w.shape = w.box.sizes;
  w.nbytes = w.box.numel() * (dtype == "float32" ? 4 : 2);
  return w;
}

PlanContext Ctx(int world, const std::string& device, const std::string& mode) {
  PlanContext ctx;
  ctx.world_size = world;
  ctx.comm_device = device;
  if (!mode.empty()) ctx.options["broadcast"] = mode;
  return ctx;
}

// Three ranks: `norm` and `emb` wanted whole by all alike; everything else is not a candidate.
std::vector<std::vector<LoadWant>> ThreeRanks() {
  std::vector<std::vector<LoadWant>> wanted(3);
  for (int r = 0; r < 3; ++r) {
    auto& w = wanted[r];
    w.push_back(Want("w", {4 * r, 0}, {4, 8}));                  // sharded: boxes differ
    w.push_back(Want("norm", {0}, {16}));                         // 64 bytes
    if (r < 2) w.push_back(Want("pair", {0}, {8}));               // not on rank 2
    w.push_back(Want("dt", {0}, {8}, r == 2 ? "bfloat16" : "float32"));  // dtype differs
    w.push_back(Want("key", {0}, {8}, "float32", r == 1 ? "other" : "key"));  // saved key differs
    w.push_back(Want("empty", {0}, {0}));                         // nothing to send
    w.push_back(Want("emb", {0, 0}, {10, 10}));                   // 400 bytes
  }
  return wanted;
}

TEST(DefaultLoadPlanner, BroadcastsRegionsEveryRankWantsAlikeRootsBalancedByBytes) {
  auto planner = LoadPlanner::Create();
  ASSERT_TRUE(planner->has_broadcast());
  const auto groups = planner->Broadcast(Ctx(3, "cpu", "on"), ThreeRanks(), proto::Metadata());
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].fqn, "norm");  // in rank 0's order
  EXPECT_EQ(groups[0].box, (Box{{0}, {16}}));
  EXPECT_EQ(groups[1].fqn, "emb");
  EXPECT_EQ(groups[1].box, (Box{{0, 0}, {10, 10}}));
  EXPECT_EQ(groups[1].root, 0);  // the largest first, to rank 0
  EXPECT_EQ(groups[0].root, 1);  // then the least-loaded rank
}

TEST(DefaultLoadPlanner, EqualRegionsGoRoundRobin) {
  std::vector<std::vector<LoadWant>> wanted(4);
  for (auto& w : wanted) {
    for (int i = 0; i < 6; ++i) w.push_back(Want("t" + std::to_string(i), {0}, {32}));
  }
  const auto groups =
      LoadPlanner::Create()->Broadcast(Ctx(4, "cpu", "on"), wanted, proto::Metadata());
  ASSERT_EQ(groups.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(groups[i].root, i % 4) << groups[i].fqn;
}

TEST(DefaultLoadPlanner, BroadcastOptionAndCommDevice) {
  auto planner = LoadPlanner::Create();
  const proto::Metadata md;
  EXPECT_TRUE(planner->Broadcast(Ctx(3, "cpu", "off"), ThreeRanks(), md).empty());
  EXPECT_TRUE(planner->Broadcast(Ctx(3, "cuda", "off"), ThreeRanks(), md).empty());
  EXPECT_TRUE(planner->Broadcast(Ctx(3, "cpu", ""), ThreeRanks(), md).empty());  // auto on gloo
  EXPECT_TRUE(planner->Broadcast(Ctx(3, "cpu", "auto"), ThreeRanks(), md).empty());
  EXPECT_EQ(planner->Broadcast(Ctx(3, "cuda", ""), ThreeRanks(), md).size(), 2u);  // auto, NCCL
  EXPECT_EQ(planner->Broadcast(Ctx(3, "cuda", "auto"), ThreeRanks(), md).size(), 2u);
  try {
    planner->Broadcast(Ctx(3, "cpu", "sometimes"), ThreeRanks(), md);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broadcast must be on, off or auto"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("default_load.lua"), std::string::npos) << e.what();
  }
}

// A script whose load_broadcast returns fixed groups (a Lua expression); it also checks what
// it is given.
class ScriptedGroups : public ::testing::Test {
 protected:
  // Runs the script returning `groups` over ThreeRanks(); returns the error ("" if none).
  std::string Run(const std::string& groups, std::vector<BroadcastGroup>* out = nullptr) {
    std::ofstream(path_) << "local G = " << groups << R"(
local P = {}
function P.load_local(ctx, targets, md) return {}, {} end
function P.load_broadcast(ctx, wanted, md)
  assert(#wanted == ctx.world_size and wanted[2][1].key ~= nil and wanted[1][1].nbytes > 0)
  return G
end
return P
)";
    try {
      auto planner = LoadPlanner::Create(path_);
      EXPECT_TRUE(planner->has_broadcast());
      auto g = planner->Broadcast(Ctx(3, "cpu", ""), ThreeRanks(), proto::Metadata());
      if (out != nullptr) *out = g;
      return "";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path_ + " load_broadcast"), std::string::npos)
          << e.what();
      return e.what();
    }
  }
  TempDir dir_;
  std::string path_ = dir_ / "groups.lua";
};

TEST_F(ScriptedGroups, ValidGroupsComeBackInOrderWithTheirRoots) {
  std::vector<BroadcastGroup> g;
  ASSERT_EQ(Run("{{fqn = 'emb', offsets = {0, 0}, sizes = {10, 10}, root = 2},"
                " {fqn = 'norm', offsets = {0}, sizes = {16}, root = 2}}", &g), "");
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0].fqn, "emb");
  EXPECT_EQ(g[0].root, 2);
  EXPECT_EQ(g[1].fqn, "norm");
  EXPECT_EQ(Run("{}", &g), "");
  EXPECT_TRUE(g.empty());
  EXPECT_EQ(Run("nil", &g), "");
  EXPECT_TRUE(g.empty());
}

TEST_F(ScriptedGroups, BadGroupsAreRefusedNamingTheKey) {
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  // A box only rank 1 wants.
  std::string e = Run("{{fqn = 'w', offsets = {4, 0}, sizes = {4, 8}, root = 1}}");
  EXPECT_TRUE(has(e, "key 'w' [4:8, 0:8]") && has(e, "rank 0 has no target chunk of key 'w'"))
      << e;
  // Wanted by two of three ranks.
  e = Run("{{fqn = 'pair', offsets = {0}, sizes = {8}, root = 0}}");
  EXPECT_TRUE(has(e, "rank 2 has no target chunk of key 'pair'")) << e;
  // Root out of range, either side.
  e = Run("{{fqn = 'norm', offsets = {0}, sizes = {16}, root = 3}}");
  EXPECT_TRUE(has(e, "key 'norm'") && has(e, "root 3 is not a rank (0..2)")) << e;
  e = Run("{{fqn = 'norm', offsets = {0}, sizes = {16}, root = -1}}");
  EXPECT_TRUE(has(e, "root -1 is not a rank")) << e;
  e = Run("{{fqn = 'norm', offsets = {0}, sizes = {16}}}");
  EXPECT_TRUE(has(e, "key 'norm'") && has(e, "no `root`")) << e;
  // The same region twice.
  e = Run("{{fqn = 'norm', offsets = {0}, sizes = {16}, root = 0},"
          " {fqn = 'norm', offsets = {0}, sizes = {16}, root = 1}}");
  EXPECT_TRUE(has(e, "group 2 (key 'norm' [0:16])") && has(e, "appears twice")) << e;
  // Ranks that disagree on dtype or saved key.
  e = Run("{{fqn = 'dt', offsets = {0}, sizes = {8}, root = 0}}");
  EXPECT_TRUE(has(e, "key 'dt'") && has(e, "rank 2 wants it as bfloat16")) << e;
  e = Run("{{fqn = 'key', offsets = {0}, sizes = {8}, root = 0}}");
  EXPECT_TRUE(has(e, "key 'key'") && has(e, "saved key 'other'")) << e;
  // A key no rank has, malformed entries.
  e = Run("{{fqn = 'nope', offsets = {0}, sizes = {1}, root = 0}}");
  EXPECT_TRUE(has(e, "key 'nope'")) << e;
  e = Run("{{offsets = {0}, sizes = {16}, root = 0}}");
  EXPECT_TRUE(has(e, "group 1 has no `fqn`")) << e;
  e = Run("{42}");
  EXPECT_TRUE(has(e, "group 1 is not a table")) << e;
  e = Run("42");
  EXPECT_TRUE(has(e, "must return a list of groups")) << e;
}

TEST(LoadPlanner, ScriptWithoutLoadBroadcastHasNone) {
  TempDir dir;
  const std::string path = dir / "plain.lua";
  std::ofstream(path) << "return {load_local = function(ctx, t, md) return {}, {} end}\n";
  auto planner = LoadPlanner::Create(path);
  EXPECT_FALSE(planner->has_broadcast());
  EXPECT_TRUE(planner->Broadcast(Ctx(3, "cuda", "on"), ThreeRanks(), proto::Metadata()).empty());
}

// ---- user code the engine must survive: metatables on what a script returns, limits ----

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

proto::SavePlan TwoItems() {
  proto::SavePlan plan;
  for (int i = 0; i < 2; ++i) {
    proto::PlanItem* it = plan.add_items();
    it->set_fqn("t" + std::to_string(i));
    it->set_dtype("float32");
    it->add_shape(4);
    it->add_offsets(0);
    it->add_sizes(4);
    it->set_nbytes(16);
    it->set_index(i);
  }
  return plan;
}

class ScriptFile : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::ofstream(path_) << text;
    return path_;
  }
  TempDir dir_;
  std::string path_ = dir_ / "user.lua";
};

TEST_F(ScriptFile, MetatablesOnReturnedPlansAreIgnoredNotCalled) {
  // Every table it returns raises from __index, __newindex and __len: read raw, the items
  // simply lack fields, and the engine says which, naming the script (no PANIC, no abort).
  const std::string trap =
      "local trap = {__index = function(t, k) error('trap __index ' .. tostring(k)) end,\n"
      "  __newindex = function() error('trap __newindex') end,\n"
      "  __len = function() error('trap __len') end}\n";
  Write(trap + "local P = {}\n"
        "function P.save_local(ctx, items) return setmetatable({setmetatable({}, trap)}, trap) end\n"
        "function P.save_global(ctx, plans) return setmetatable({}, trap), setmetatable({}, trap) end\n"
        "return P\n");
  auto planner = SavePlanner::Create(path_);
  PlanContext ctx;
  std::string err = ErrorOf([&] { planner->Local(ctx, TwoItems()); });
  EXPECT_TRUE(Has(err, path_ + " save_local") && Has(err, "item 1 has no valid `index`")) << err;
  err = ErrorOf([&] { planner->Global(ctx, {TwoItems()}, nullptr); });
  EXPECT_TRUE(Has(err, path_ + " save_global") && Has(err, "one plan per rank")) << err;

  Write(trap + "return {load_local = function(ctx, targets, md)\n"
        "  return {setmetatable({}, trap)}, setmetatable({}, trap) end}\n");
  LoadTarget t;
  t.fqn = "t0";
  std::vector<int> missing;
  err = ErrorOf([&] { LoadPlanner::Create(path_)->Local(ctx, {t}, proto::Metadata(), &missing); });
  EXPECT_TRUE(Has(err, path_ + " load_local") && Has(err, "read 1 has no valid `target`")) << err;

  Write(trap + "return {options = setmetatable({}, trap),\n"
        "  convert = function(ctx, md) return {setmetatable({}, trap)} end}\n");
  auto conv = ConvertPlanner::Create(path_);
  EXPECT_TRUE(conv->Options({}).empty());
  std::vector<int64_t> mesh;
  err = ErrorOf([&] { conv->Plan(ctx, proto::Metadata(), &mesh); });
  EXPECT_TRUE(Has(err, path_ + " convert") && Has(err, "entry 1 has no `key`")) << err;
}

// save_local may drop and reorder items; save_global's answer names each item by the `index`
// it was given, so every item keeps its own source (a lookup by position once gave one item's
// data to another of the same shape, or refused a plan after a drop).
TEST_F(ScriptFile, SaveGlobalFindsItemsThatSaveLocalReorderedOrDropped) {
  Write("local P = {}\n"
        "function P.save_local(ctx, items)\n"
        "  local out = {}\n"
        "  for i = #items, 2, -1 do out[#out + 1] = items[i] end  -- reversed, the first dropped\n"
        "  return out\n"
        "end\n"
        "function P.save_global(ctx, plans)\n"
        "  for _, it in ipairs(plans[1]) do it.file = '__0_0.distcp' end\n"
        "  return plans\n"
        "end\n"
        "return P\n");
  proto::SavePlan three = TwoItems();
  proto::PlanItem* extra = three.add_items();
  *extra = three.items(1);
  extra->set_fqn("t2");
  extra->set_index(2);
  PlanContext ctx;
  auto planner = SavePlanner::Create(path_);
  const proto::SavePlan local = planner->Local(ctx, three);
  ASSERT_EQ(local.items_size(), 2);
  EXPECT_EQ(local.items(0).fqn(), "t2");
  EXPECT_EQ(local.items(1).fqn(), "t1");
  const std::vector<proto::SavePlan> global = planner->Global(ctx, {local}, nullptr);
  ASSERT_EQ(global.size(), 1u);
  ASSERT_EQ(global[0].items_size(), 2);
  for (const proto::PlanItem& it : global[0].items()) {
    EXPECT_EQ(it.fqn(), "t" + std::to_string(it.index())) << "item " << it.fqn() << " got the source of another";
  }
}

TEST_F(ScriptFile, AModuleTableWithIndexRunsProtected) {
  // Inheritance through __index works ...
  Write("local Base = {}\n"
        "function Base.save_global(ctx, plans) return plans end\n"
        "function Base.save_local(ctx, items) items[1].fqn = 'renamed' return items end\n"
        "return setmetatable({}, {__index = Base})\n");
  PlanContext ctx;
  EXPECT_EQ(SavePlanner::Create(path_)->Local(ctx, TwoItems()).items(0).fqn(), "renamed");
  // ... and an __index that raises is an error naming the script and line.
  Write("local P = {}\n"
        "return setmetatable(P, {__index = function(t, k)\n"
        "  error('no field ' .. k)\n"
        "end})\n");
  const std::string err = ErrorOf([&] { SavePlanner::Create(path_); });
  EXPECT_TRUE(Has(err, path_) && Has(err, "user.lua:3: no field save_local")) << err;
}

TEST_F(ScriptFile, AScriptThatDropsTheDcppTableStillGetsCtx) {
  Write("local P = {}\n"
        "dcpp = nil\n"
        "setmetatable(_G, {__index = function(t, k) error('global ' .. k) end})\n"
        "function P.save_global(ctx, plans) return plans end\n"
        "function P.save_local(ctx, items)\n"
        "  assert(ctx.overlap({0}, {4}, {2}, {4}))\n"
        "  return items\n"
        "end\n"
        "return P\n");
  PlanContext ctx;
  EXPECT_EQ(SavePlanner::Create(path_)->Local(ctx, TwoItems()).items_size(), 2);
}

TEST_F(ScriptFile, EveryPlannerStopsAtItsLimitsNamingTheScript) {
  PlannerLimits tight;
  tight.instructions = 1'000'000;
  tight.memory_bytes = 32 << 20;
  PlanContext ctx;
  // An endless loop in each kind of planner call.
  Write("local P = {}\n"
        "function P.save_local(ctx, items) while true do end end\n"
        "function P.save_global(ctx, plans)\n"
        "  local t = {}\n"
        "  while true do t[#t + 1] = string.rep('x', 1e6) .. #t end\n"
        "end\n"
        "return P\n");
  auto saver = SavePlanner::Create(path_, tight);
  std::string err = ErrorOf([&] { saver->Local(ctx, TwoItems()); });
  EXPECT_TRUE(Has(err, path_ + " save_local") && Has(err, "user.lua:2: exceeded the instruction "
                                                          "limit of 1000000")) << err;
  err = ErrorOf([&] { saver->Global(ctx, {TwoItems()}, nullptr); });
  EXPECT_TRUE(Has(err, path_ + " save_global") &&
              Has(err, "exceeded the memory limit of 33554432 bytes")) << err;

  Write("return {load_local = function(ctx, targets, md)\n"
        "  local function f(s) return (s:gsub('.', f)) end\n"
        "  return f('ab')\n"
        "end}\n");
  std::vector<int> missing;
  err = ErrorOf([&] { LoadPlanner::Create(path_, tight)->Local(ctx, {}, proto::Metadata(), &missing); });
  EXPECT_TRUE(Has(err, path_ + " load_local") && Has(err, "user.lua:2:") &&
              Has(err, "C stack overflow")) << err;

  Write("local function f() return 1 + f() end\n"
        "return {convert = function(ctx, md) return f() end}\n");
  std::vector<int64_t> mesh;
  err = ErrorOf([&] { ConvertPlanner::Create(path_, tight)->Plan(ctx, proto::Metadata(), &mesh); });
  EXPECT_TRUE(Has(err, path_ + " convert") && Has(err, "user.lua:1:") &&
              Has(err, "stack overflow")) << err;

  // The script's top level is bounded too.
  Write("while true do end\n");
  err = ErrorOf([&] { ConvertPlanner::Create(path_, tight); });
  EXPECT_TRUE(Has(err, "user.lua:1: exceeded the instruction limit")) << err;
}

TEST_F(ScriptFile, ARaisedLimitLetsAHeavierPlannerPass) {
  Write("local P = {}\n"
        "function P.save_global(ctx, plans) return plans end\n"
        "function P.save_local(ctx, items)\n"
        "  local s = 0\n"
        "  for i = 1, 2e6 do s = s + i end\n"
        "  items[1].fqn = 'sum' .. s\n"
        "  return items\n"
        "end\n"
        "return P\n");
  PlanContext ctx;
  PlannerLimits limits;
  limits.instructions = 1'000'000;
  EXPECT_TRUE(Has(ErrorOf([&] { SavePlanner::Create(path_, limits)->Local(ctx, TwoItems()); }),
                  "exceeded the instruction limit of 1000000"));
  for (int64_t raised : {int64_t{20'000'000}, int64_t{0}}) {
    limits.instructions = raised;
    auto saver = SavePlanner::Create(path_, limits);
    EXPECT_EQ(saver->Local(ctx, TwoItems()).items(0).fqn(), "sum2000001000000");
    EXPECT_GT(saver->peak_instructions(), 2'000'000);
  }
}


// ---- the shipped conversion planners ----

// Metadata of whole tensors of float32 with the given shapes (no files: planning reads only
// keys, dtypes and shapes).
proto::Metadata TensorsMd(const std::vector<std::pair<std::string, std::vector<int64_t>>>& keys) {
  proto::Metadata md;
  for (const auto& [fqn, shape] : keys) {
    proto::TensorMeta* t = md.add_tensors();
    t->set_fqn(fqn);
    t->set_dtype("float32");
    for (int64_t s : shape) t->add_shape(s);
  }
  return md;
}

// The layout fsdp_to_tp gives each key over two ranks, as "key=Shard(0)@[2]".
std::map<std::string, std::string> FsdpToTp(const proto::Metadata& md,
                                            const std::map<std::string, std::string>& set = {}) {
  auto planner = ConvertPlanner::Create("planners/fsdp_to_tp.lua");
  PlanContext ctx;
  ctx.world_size = 2;
  ctx.options = planner->Options(set);
  std::vector<int64_t> mesh;
  std::map<std::string, std::string> out;
  for (const ConvertEntry& e : planner->Plan(ctx, md, &mesh)) {
    EXPECT_EQ(e.source, e.key);
    out[e.key] = e.layout.ToString();
  }
  return out;
}

TEST(FsdpToTp, OptimizerStateFollowsItsParameterUnderPyTorchsNestings) {
  const std::string col = "Shard(0)@[2]", row = "Shard(1)@[2]", whole = "Replicate()@[2]";
  // dcp.save({"model": model_sd, "optim": optim_sd}), the optimizer dict at the top level
  // next to a "model" dict, and both at the top level.
  for (const auto& [model, optim] : std::vector<std::pair<std::string, std::string>>{
           {"model.", "optim.state."}, {"model.", "state."}, {"", "state."}, {"", "optim.state."},
           {"", "optimizer.state."}}) {
    const std::string wk = "attention.wk.weight", wo = "attention.wo.weight";
    const auto got = FsdpToTp(TensorsMd({{model + wk, {24, 16}},
                                         {model + wo, {16, 24}},
                                         {optim + wk + ".exp_avg", {24, 16}},
                                         {optim + wk + ".exp_avg_sq", {24, 16}},
                                         {optim + wk + ".step", {}},
                                         {optim + wo + ".exp_avg", {16, 24}},
                                         {optim + wo + ".step", {}}}));
    const std::string at = " with parameters under '" + model + "', state under '" + optim + "'";
    EXPECT_EQ(got.at(model + wk), col) << at;
    EXPECT_EQ(got.at(optim + wk + ".exp_avg"), col) << at;
    EXPECT_EQ(got.at(optim + wk + ".exp_avg_sq"), col) << at;
    EXPECT_EQ(got.at(optim + wk + ".step"), whole) << at;
    EXPECT_EQ(got.at(model + wo), row) << at;
    EXPECT_EQ(got.at(optim + wo + ".exp_avg"), row) << at;
    EXPECT_EQ(got.at(optim + wo + ".step"), whole) << at;
  }
}

TEST(FsdpToTp, StateOfAnUnknownParameterOrOtherShapeIsNotSharded) {
  const auto got = FsdpToTp(TensorsMd({{"model.attention.wk.weight", {24, 16}},
                                       {"optim.state.attention.wk.weight.other", {16}},
                                       {"optim.state.attention.wq.weight.exp_avg", {24, 16}},
                                       // a model whose top module is called `state`
                                       {"state.attention.wv.weight", {24, 16}}}));
  EXPECT_EQ(got.at("model.attention.wk.weight"), "Shard(0)@[2]");
  EXPECT_EQ(got.at("optim.state.attention.wk.weight.other"), "Replicate()@[2]");
  EXPECT_EQ(got.at("optim.state.attention.wq.weight.exp_avg"), "Replicate()@[2]");
  EXPECT_EQ(got.at("state.attention.wv.weight"), "Shard(0)@[2]");
  // param_prefixes is an option: without "model." the state no longer finds its parameter.
  const auto bare = FsdpToTp(TensorsMd({{"model.attention.wk.weight", {24, 16}},
                                        {"optim.state.attention.wk.weight.exp_avg", {24, 16}}}),
                             {{"param_prefixes", ""}});
  EXPECT_EQ(bare.at("optim.state.attention.wk.weight.exp_avg"), "Replicate()@[2]");
}

}  // namespace
}  // namespace dcpp
