// Save-plan caching (plan_cache.h) on one rank: which saves reuse a plan, what they send, and
// that a reused plan yields the metadata a freshly planned one does. Several ranks:
// tests/multirank_test.cc (PlanCaching*).
#include "core/engine/plan_cache.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "core/dcpp.h"
#include "core/engine/save_internal.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

StateDict Model(int64_t rows, float seed) {
  StateDict sd;
  sd.AddTensor("a", at::arange(rows * 3, at::kFloat).reshape({rows, 3}) + seed);
  sd.AddTensor("b", at::full({5}, seed, at::kFloat));
  sd.AddBytes("step", std::to_string(static_cast<int>(seed)));
  return sd;
}

SaveOptions Caching(bool on) {
  SaveOptions so;
  so.plan_caching = on;
  so.thread_count = 2;
  return so;
}

TEST(PlanCache, SecondSaveSendsAHashAndReusesThePlan) {
  internal::ClearPlanCaches();
  TempDir a, b;
  const SaveStats first = save(Model(4, 1), a.path(), Caching(true));
  EXPECT_FALSE(first.plan_cached);
  EXPECT_FALSE(first.local_plan_cached);
  EXPECT_GT(first.plan_bytes_sent, 17 + 40);  // three items
  EXPECT_EQ(first.plan_bytes_gathered, first.plan_bytes_sent);

  const SaveStats second = save(Model(4, 1), b.path(), Caching(true));
  EXPECT_TRUE(second.plan_cached);
  EXPECT_TRUE(second.local_plan_cached);
  EXPECT_EQ(second.plan_bytes_sent, 17);  // a tag and an XXH3-128
  EXPECT_EQ(second.plan_bytes_gathered, 17);
  EXPECT_EQ(second.items_written, first.items_written);
  // A fresh folder, the same data: the same metadata, byte for byte.
  EXPECT_EQ(ReadFile(b / ".metadata"), ReadFile(a / ".metadata"));

  StateDict back = Model(4, 0);
  load(back, b.path());
  EXPECT_TRUE(at::equal(back.FindTensor("a")->chunks[0].tensor, Model(4, 1).FindTensor("a")->chunks[0].tensor));
  EXPECT_EQ(back.FindBytes("step")->data, "1");
}

// Saves into one folder move to new file numbers: the cached plan must move with them and
// give what planning each save afresh gives, also in PyTorch DCP's format (whose writer frames
// every item, so the items are placed again).
TEST(PlanCache, RepeatedSavesIntoOneFolderMatchUncachedSaves) {
  for (const Format format : {Format::kNative, Format::kDcp}) {
    internal::ClearPlanCaches();
    TempDir cached, plain;
    const std::string what = format == Format::kDcp ? "dcp" : "native";
    for (int step = 0; step < 3; ++step) {
      const StateDict sd = Model(4 + step % 2, static_cast<float>(step));  // (every save changes the plan)
      const StateDict same = Model(4 + step % 2, static_cast<float>(step + 5));  // "step" as long
      SaveOptions on = Caching(true), off = Caching(false);
      on.format = off.format = format;
      save(sd, cached.path(), on);
      const SaveStats c = save(same, cached.path(), on);
      save(sd, plain.path(), off);
      save(same, plain.path(), off);
      EXPECT_TRUE(c.plan_cached) << what << " step " << step;
      // DCP's metadata ends with the folder's path and a fresh save id: compare what precedes.
      const auto comparable = [&](const std::string& md) {
        return format == Format::kDcp ? md.substr(0, md.find("storage_meta")) : md;
      };
      const std::string md = ReadFile(cached / ".metadata");
      EXPECT_EQ(comparable(md), comparable(ReadFile(plain / ".metadata"))) << what << " step " << step;
      if (format == Format::kNative) {
        EXPECT_NE(md.find("__0_" + std::to_string(4 * step + 2)), std::string::npos) << "step " << step;
      }
      StateDict back = Model(4 + step % 2, 99);
      load(back, cached.path());
      EXPECT_TRUE(at::equal(back.FindTensor("a")->chunks[0].tensor, same.FindTensor("a")->chunks[0].tensor))
          << what << " step " << step;
    }
  }
}

TEST(PlanCache, ChangedItemsOrConfigurationPlanAgain) {
  internal::ClearPlanCaches();
  TempDir a, b, c, d, e, f, ref;
  save(Model(4, 1), a.path(), Caching(true));
  // A changed shape.
  const SaveStats shape = save(Model(6, 1), b.path(), Caching(true));
  EXPECT_FALSE(shape.plan_cached);
  EXPECT_FALSE(shape.local_plan_cached);
  save(Model(6, 1), ref.path(), Caching(false));
  EXPECT_EQ(ReadFile(b / ".metadata"), ReadFile(ref / ".metadata"));
  // A new key.
  StateDict more = Model(6, 1);
  more.AddTensor("c", at::ones({2}));
  EXPECT_FALSE(save(more, c.path(), Caching(true)).plan_cached);
  StateDict back = Model(6, 0);
  back.AddTensor("c", at::zeros({2}));
  load(back, c.path());
  EXPECT_TRUE(at::equal(back.FindTensor("c")->chunks[0].tensor, at::ones({2})));
  // Other planner options, another thread count: planned again.
  SaveOptions opts = Caching(true);
  opts.planner_options["x"] = "1";
  EXPECT_FALSE(save(more, d.path(), opts).plan_cached);
  EXPECT_TRUE(save(more, d.path(), opts).plan_cached);
  SaveOptions threads = Caching(true);
  threads.thread_count = 1;
  EXPECT_FALSE(save(more, e.path(), threads).plan_cached);
  // Other values and a blob of the same size keep the plan; a blob of another size does not.
  StateDict same = Model(6, 2);
  same.AddTensor("c", at::zeros({2}));
  EXPECT_TRUE(save(same, f.path(), Caching(true)).plan_cached);
  StateDict longer = Model(6, 10);  // "step" = "10"
  longer.AddTensor("c", at::zeros({2}));
  EXPECT_FALSE(save(longer, f.path(), Caching(true)).plan_cached);
}

TEST(PlanCache, ChangedPlannerScriptPlansAgain) {
  internal::ClearPlanCaches();
  TempDir dir, out;
  const std::string script = dir / "p.lua";
  const auto write = [&](const std::string& extra) {
    std::ofstream(script) << EmbeddedPlanner("planners/default_save.lua") << "\n-- " << extra << "\n";
  };
  write("one");
  SaveOptions so = Caching(true);
  so.planner = script;
  EXPECT_FALSE(save(Model(4, 1), out.path(), so).plan_cached);
  EXPECT_TRUE(save(Model(4, 1), out.path(), so).plan_cached);
  write("two");
  EXPECT_FALSE(save(Model(4, 1), out.path(), so).plan_cached);
}

TEST(PlanCache, OffSendsFullPlansAndStoresNothing) {
  internal::ClearPlanCaches();
  TempDir a, b;
  const SaveStats first = save(Model(4, 1), a.path(), Caching(false));
  const SaveStats second = save(Model(4, 1), b.path(), Caching(false));
  EXPECT_FALSE(second.plan_cached);
  EXPECT_FALSE(second.local_plan_cached);
  EXPECT_EQ(second.plan_bytes_sent, first.plan_bytes_sent);
  EXPECT_FALSE(save(Model(4, 1), b.path(), Caching(true)).plan_cached);  // nothing was stored
}

TEST(PlanCache, ThroughTheAsyncSaver) {
  internal::ClearPlanCaches();
  TempDir a, b, ref;
  AsyncSaver saver;
  EXPECT_FALSE(saver.Save(Model(4, 1), a.path(), Caching(true)).wait().plan_cached);
  EXPECT_TRUE(saver.Save(Model(4, 2), b.path(), Caching(true)).wait().plan_cached);
  save(Model(4, 2), ref.path(), Caching(false));
  EXPECT_EQ(ReadFile(b / ".metadata"), ReadFile(ref / ".metadata"));
}

// The coordinator's step alone (internal::PlanGlobally): a cached plan is used only where it
// cannot touch the committed checkpoint and was numbered from its first_file_index.
class CoordinatorGuards : public ::testing::Test {
 protected:
  void SetUp() override { internal::ClearPlanCaches(); }

  // One rank's local plan: one float32 tensor "t" of 4 elements.
  static std::string LocalPlan() {
    proto::SavePlan p;
    proto::PlanItem* it = p.add_items();
    it->set_fqn("t");
    it->set_dtype("float32");
    it->add_shape(4);
    it->add_offsets(0);
    it->add_sizes(4);
    it->set_nbytes(16);
    return internal::SerializePlan(p);
  }

  // The answer's tag for a save at `first` with `committed` files, sending the full plan or a hash.
  char Answer(SavePlanner& planner, int first, const std::vector<std::string>& committed, bool hash) {
    PlanContext ctx;
    ctx.first_file_index = first;
    const std::string local = LocalPlan();
    const std::string msg = hash ? internal::kPlanHash + internal::PlanHash(local) : internal::kPlanFull + local;
    std::vector<std::string> answers(1);
    std::map<std::string, std::string> data;
    internal::PlanGlobally({msg}, "key", planner, ctx, committed, writer_, &answers, &data);
    if (answers[0][0] != internal::kResend) {
      files_ = internal::ReadAnswer(answers[0], writer_).items(0).file();
    }
    return answers[0][0];
  }

  TempDir dir_;
  FileSystemWriter writer_{dir_.path()};
  std::string files_;
};

TEST_F(CoordinatorGuards, CommittedFilesAtOrAboveTheFirstIndexForbidReuse) {
  auto planner = SavePlanner::Create();
  EXPECT_EQ(Answer(*planner, 0, {}, false), internal::kGlobalPlanned);
  EXPECT_EQ(files_, "__0_0.distcp");
  EXPECT_EQ(Answer(*planner, 3, {"__0_0.distcp"}, true), internal::kGlobalCached);
  EXPECT_EQ(files_, "__0_3.distcp");
  // A committed file numbered 3 (FirstFreeFileIndex broke its promise): planned again, and the
  // planner's answer is then refused by the validation rather than overwriting it.
  EXPECT_THROW(Answer(*planner, 3, {"__0_3.distcp"}, true), Error);
  EXPECT_EQ(Answer(*planner, 4, {"__0_3.distcp"}, true), internal::kGlobalCached);
  EXPECT_EQ(files_, "__0_4.distcp");
}

TEST_F(CoordinatorGuards, APlanNotNumberedFromTheFirstIndexIsNotMoved) {
  // save_global that always writes file number 7, whatever ctx.first_file_index.
  auto planner = SavePlanner::FromSource("fixed.lua", R"(
    local P = {}
    function P.save_global(ctx, plans)
      for r = 1, #plans do
        for _, it in ipairs(plans[r]) do it.file = "__0_7.distcp" end
      end
      return plans
    end
    return P)");
  EXPECT_EQ(Answer(*planner, 8, {}, false), internal::kGlobalPlanned);
  EXPECT_EQ(Answer(*planner, 8, {}, true), internal::kGlobalCached);  // the same index: reused
  EXPECT_EQ(files_, "__0_7.distcp");
  EXPECT_EQ(Answer(*planner, 9, {}, true), internal::kGlobalPlanned);  // 7 < 8: never moved
  EXPECT_EQ(files_, "__0_7.distcp");
  // A hash the cache does not hold (another plan): every rank must send its plan.
  PlanContext ctx;
  std::vector<std::string> answers(1);
  std::map<std::string, std::string> data;
  internal::PlanGlobally({internal::kPlanHash + internal::PlanHash("other")}, "key", *planner, ctx, {}, writer_,
                         &answers, &data);
  EXPECT_EQ(answers[0], std::string(1, internal::kResend));
}

// ---- the pieces ----

proto::SavePlan PlanIn(std::initializer_list<const char*> files) {
  proto::SavePlan p;
  for (const char* f : files) p.add_items()->set_file(f);
  return p;
}

TEST(PlanCache, MoveFileNumbers) {
  std::vector<proto::SavePlan> g = {PlanIn({"__0_4.distcp", "__0_5.distcp", "__0_4.distcp"}),
                                    PlanIn({"__1_4.distcp"})};
  ASSERT_TRUE(internal::MoveFileNumbers(g, 4, 10, {"__0_4.distcp"}));
  EXPECT_EQ(g[0].items(0).file(), "__0_10.distcp");
  EXPECT_EQ(g[0].items(1).file(), "__0_11.distcp");
  EXPECT_EQ(g[0].items(2).file(), "__0_10.distcp");
  EXPECT_EQ(g[1].items(0).file(), "__1_10.distcp");
  // Down to 0 (a fresh folder) as well.
  ASSERT_TRUE(internal::MoveFileNumbers(g, 10, 0, {}));
  EXPECT_EQ(g[0].items(1).file(), "__0_1.distcp");

  std::vector<proto::SavePlan> below = {PlanIn({"__0_3.distcp"})};
  EXPECT_FALSE(internal::MoveFileNumbers(below, 4, 8, {}));  // not numbered from first_file_index
  std::vector<proto::SavePlan> taken = {PlanIn({"__0_4.distcp"})};
  EXPECT_FALSE(internal::MoveFileNumbers(taken, 4, 6, {"__0_6.distcp"}));
  std::vector<proto::SavePlan> odd = {PlanIn({"data.bin"})};
  EXPECT_FALSE(internal::MoveFileNumbers(odd, 0, 1, {}));
}

TEST(PlanCache, ReadGathered) {
  const std::string p0 = "plan of rank 0", p1 = "plan of rank 1";
  internal::CachedGlobalPlan cached;
  cached.hashes = {internal::PlanHash(p0), internal::PlanHash(p1)};
  cached.local = {p0, p1};
  const std::string h0 = internal::kPlanHash + internal::PlanHash(p0);
  const std::string h1 = internal::kPlanHash + internal::PlanHash(p1);

  internal::GatheredPlans g = internal::ReadGathered({h0, h1}, &cached);
  EXPECT_TRUE(g.complete && g.unchanged);
  EXPECT_EQ(g.local, cached.local);
  EXPECT_EQ(g.bytes, 34);

  g = internal::ReadGathered({h0, internal::kPlanFull + std::string("new plan")}, &cached);
  EXPECT_TRUE(g.complete);
  EXPECT_FALSE(g.unchanged);
  EXPECT_EQ(g.local[0], p0);
  EXPECT_EQ(g.local[1], "new plan");

  g = internal::ReadGathered({h0, internal::kPlanHash + internal::PlanHash("other")}, &cached);
  EXPECT_FALSE(g.complete);
  g = internal::ReadGathered({h0, h1}, nullptr);
  EXPECT_FALSE(g.complete);
  g = internal::ReadGathered({h1, h0}, &cached);  // each rank against its own entry
  EXPECT_FALSE(g.complete);

  try {
    internal::ReadGathered({h0, "H123"}, &cached);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dcpp
