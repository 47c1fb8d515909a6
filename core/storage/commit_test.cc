// CommitFiles(): the renames in order between two folder syncs, a failure before the first
// rename thrown with nothing changed, one after it thrown as a partial commit, and failures
// after the commit point returned as warnings; faults injected at each operation (FaultEnv).
#include "core/storage/commit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/testing/errors.h"
#include "core/testing/fault_env.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::FaultEnv;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;
using Fault = FaultEnv::Fault;

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A folder holding the old "a", "b", "old" and the new "a.tmp", "b.tmp", "c.tmp"; the plan
// renames the three temporaries in that order and removes the old files ("*.own") not kept.
struct Folder {
  TempDir tmp;
  CommitPlan plan;

  Folder() {
    for (const char* name : {"a.own", "b.own", "old.own", "other"}) WriteFile(tmp / name, "old");
    for (const char* name : {"a.tmp", "b.tmp", "c.tmp"}) WriteFile(tmp / name, "new");
    plan.dir = tmp.path();
    plan.renames = {{"a.tmp", "a.own"}, {"b.tmp", "b.own"}, {"c.tmp", "c.own"}};
    plan.own_files = [this] {
      std::vector<std::string> own;
      for (const std::string& name : Names(tmp.path())) {
        if (name.size() > 4 && name.compare(name.size() - 4, 4, ".own") == 0) own.push_back(name);
      }
      return own;
    };
    plan.messages.not_started = [](const std::string& cause) { return "NOT STARTED: " + cause; };
    plan.messages.partial = [](size_t in_place, size_t total, const std::string& cause) {
      return StrCat("PARTIAL ", in_place, "/", total, ": ", cause);
    };
    plan.messages.not_durable = [](const std::string& cause) { return "NOT DURABLE: " + cause; };
    plan.messages.cannot_remove = [](const std::string& name, const std::string& cause) {
      return "CANNOT REMOVE " + name + ": " + cause;
    };
  }
};

// The operations of a clean commit of Folder's plan, in order:
//   0 fsync folder, 1-3 rename a, b, c, 4 fsync folder, 5 remove old.own
constexpr int kOperations = 6;

TEST(CommitFiles, RenamesInOrderThenRemovesTheOwnFilesNotKept) {
  Folder f;
  f.plan.keep = {"b.own"};  // kept anyway: renamed into place
  FaultEnv env;
  const CommitReport report = CommitFiles(&env, f.plan);
  EXPECT_TRUE(report.warnings.empty());
  EXPECT_EQ(env.operations(), kOperations);
  EXPECT_EQ(Names(f.tmp.path()), (std::vector<std::string>{"a.own", "b.own", "c.own", "other"}));
  for (const char* name : {"a.own", "b.own", "c.own"}) EXPECT_EQ(ReadFile(f.tmp / name), "new") << name;
}

TEST(CommitFiles, KeepsWhatThePlanKeeps) {
  Folder f;
  f.plan.keep = {"old.own"};
  FaultEnv env;
  EXPECT_TRUE(CommitFiles(&env, f.plan).warnings.empty());
  EXPECT_EQ(Names(f.tmp.path()), (std::vector<std::string>{"a.own", "b.own", "c.own", "old.own", "other"}));
}

TEST(CommitFiles, WithoutOwnFilesRemovesNothing) {
  Folder f;
  f.plan.own_files = nullptr;
  FaultEnv env;
  EXPECT_TRUE(CommitFiles(&env, f.plan).warnings.empty());
  EXPECT_EQ(env.operations(), kOperations - 1);
  EXPECT_EQ(Names(f.tmp.path()), (std::vector<std::string>{"a.own", "b.own", "c.own", "old.own", "other"}));
}

TEST(CommitFiles, ARenameFailingAfterAnotherIsAPartialCommit) {
  // A rename fails at each of the three positions: the first is "not started", nothing
  // changed; the later ones say how many are in place, and those are.
  for (int at = 1; at <= 3; ++at) {
    Folder f;
    FaultEnv env;
    env.Arm(Fault::kEio, at);
    bool partial = false;
    std::string error;
    try {
      CommitFiles(&env, f.plan);
    } catch (const PartialCommitError& e) {
      partial = true;
      error = e.what();
    } catch (const Error& e) {
      error = e.what();
    }
    const std::string tmp = std::string(1, "abc"[at - 1]) + ".tmp";
    EXPECT_EQ(env.fault_path(), f.tmp / tmp);
    EXPECT_HAS(error, f.tmp / tmp);
    EXPECT_HAS(error, "Input/output error (injected)");
    if (at == 1) {
      EXPECT_FALSE(partial);
      EXPECT_EQ(error.rfind("NOT STARTED: rename ", 0), 0u) << error;
      EXPECT_EQ(Names(f.tmp.path()),
                (std::vector<std::string>{"a.own", "a.tmp", "b.own", "b.tmp", "c.tmp", "old.own", "other"}));
      EXPECT_EQ(ReadFile(f.tmp / "a.own"), "old");
    } else {
      EXPECT_TRUE(partial) << error;
      EXPECT_EQ(error.rfind(StrCat("PARTIAL ", at - 1, "/3: rename "), 0), 0u) << error;
      EXPECT_EQ(ReadFile(f.tmp / "a.own"), "new");
      EXPECT_EQ(ReadFile(f.tmp / "b.own"), at == 3 ? "new" : "old");
      EXPECT_TRUE(std::filesystem::exists(f.tmp / "old.own"));  // nothing removed
    }
  }
}

TEST(CommitFiles, AFailedFirstSyncChangesNothing) {
  Folder f;
  FaultEnv env;
  env.Arm(Fault::kEnospc, 0);
  const std::string error = ErrorOf([&] { CommitFiles(&env, f.plan); });
  EXPECT_EQ(error.rfind("NOT STARTED: fsync folder " + f.tmp.path(), 0), 0u) << error;
  EXPECT_EQ(env.operations(), 1);
  EXPECT_EQ(ReadFile(f.tmp / "a.own"), "old");
  EXPECT_TRUE(std::filesystem::exists(f.tmp / "c.tmp"));
}

TEST(CommitFiles, GenericMessagesWhenTheCallerGivesNone) {
  Folder f;
  f.plan.messages = {};
  FaultEnv env;
  env.Arm(Fault::kEio, 2);
  const std::string error = ErrorOf([&] { CommitFiles(&env, f.plan); });
  EXPECT_EQ(error.rfind("commit into " + f.tmp.path() + " is incomplete: 1 of 3 files are in place", 0), 0u)
      << error;

  Folder g;
  g.plan.messages = {};
  FaultEnv env2;
  env2.Arm(Fault::kEio, 0);
  // Not started: the cause itself.
  EXPECT_EQ(ErrorOf([&] { CommitFiles(&env2, g.plan); }),
            "fsync folder " + g.tmp.path() + ": Input/output error (injected)");
}

TEST(CommitFiles, AFailedSecondSyncIsAWarningAndKeepsTheOlderFiles) {
  Folder f;
  FaultEnv env;
  env.Arm(Fault::kEio, 4);
  const CommitReport report = CommitFiles(&env, f.plan);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0], "NOT DURABLE: fsync folder " + f.tmp.path() + ": Input/output error (injected)");
  EXPECT_EQ(Names(f.tmp.path()), (std::vector<std::string>{"a.own", "b.own", "c.own", "old.own", "other"}));
}

TEST(CommitFiles, AFailedRemovalIsAWarning) {
  Folder f;
  FaultEnv env;
  env.Arm(Fault::kEio, 5);
  const CommitReport report = CommitFiles(&env, f.plan);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0],
            "CANNOT REMOVE old.own: remove " + (f.tmp / "old.own") + ": Input/output error (injected)");
  EXPECT_TRUE(std::filesystem::exists(f.tmp / "old.own"));
}

TEST(CommitFiles, AFailedListingIsAWarning) {
  Folder f;
  f.plan.own_files = []() -> std::vector<std::string> { throw Error("cannot list folder X: EACCES"); };
  f.plan.messages.cannot_list = [](const std::string& cause) { return "CANNOT LIST: " + cause; };
  FaultEnv env;
  const CommitReport report = CommitFiles(&env, f.plan);
  EXPECT_EQ(report.warnings, std::vector<std::string>{"CANNOT LIST: cannot list folder X: EACCES"});
  EXPECT_TRUE(std::filesystem::exists(f.tmp / "old.own"));
}

TEST(CommitFiles, APowerLossAtEachOperationLeavesTheOldOrTheNewFiles) {
  // After the machine comes back, the renames are all there or none: they become durable
  // together, with the second folder sync.
  for (int at = 0; at < kOperations; ++at) {
    Folder f;
    FaultEnv env;
    env.Track(f.tmp.path());
    env.Arm(Fault::kPowerLoss, at);
    try {
      CommitFiles(&env, f.plan);
    } catch (const Error&) {
    }
    env.DropUnsynced();
    std::string seen;
    for (const char* name : {"a.own", "b.own", "c.own"}) {
      const std::string content = ReadFile(f.tmp / name);
      seen += content == "new" ? 'N' : content == "old" ? 'O' : '-';
    }
    EXPECT_EQ(seen, at <= 4 ? "OO-" : "NNN") << "power loss at operation " << at;
  }
}

TEST(CommitFiles, RefusesAnEmptyPlan) {
  TempDir tmp;
  CommitPlan plan;
  plan.dir = tmp.path();
  FaultEnv env;
  EXPECT_HAS(ErrorOf([&] { CommitFiles(&env, plan); }), "no file to put in place");
  EXPECT_EQ(env.operations(), 0);
}

}  // namespace
}  // namespace dcpp
