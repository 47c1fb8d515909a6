// Crash consistency through an injectable filesystem (core/testing/fault_env.h): a save over
// a committed checkpoint, an overwriting convert, a save in PyTorch DCP's format and a
// safetensors export over an earlier one (a single shard) are run
// once per operation index, with a power loss or an I/O error injected at that operation.
// After a power loss the folder must load as exactly the old or exactly the new checkpoint,
// bit for bit; after an error the save fails naming the file (or, past the commit, succeeds
// with a warning), the right checkpoint loads and no debris remains. Either way, the next
// save leaves only its own files.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "core/dcpp.h"
#include "core/storage/dcp/dcp.h"
#include "core/testing/fault_env.h"
#include "core/testing/temp_dir.h"
#include "core/tools/convert.h"
#include "core/tools/safetensors_export.h"

namespace dcpp {
namespace {

using testing::FaultEnv;
using testing::TempDir;
using Fault = FaultEnv::Fault;

// Generation g of a small checkpoint: distinguishable values in every byte.
at::Tensor W(int g) { return at::arange(40 * 9, at::kFloat).reshape({40, 9}) + 1000 * g; }
at::Tensor B(int g) { return at::arange(13, at::kLong) * (g + 3); }

StateDict Gen(int g, bool with_blob) {
  StateDict sd;
  sd.AddTensor("w", W(g));
  sd.AddTensor("b", B(g));
  if (with_blob) sd.AddBytes("blob", "generation " + std::to_string(g));
  return sd;
}

// Which generation the folder holds, or -1 if it holds none exactly (or does not load).
int GenerationIn(const std::string& dir, bool with_blob, const std::vector<int>& candidates) {
  try {
    const at::Tensor w = at::zeros({40, 9}), b = at::zeros({13}, at::kLong);
    StateDict back;
    back.AddTensor("w", w);
    back.AddTensor("b", b);
    if (with_blob) back.AddBytes("blob", "");
    load(back, dir);
    for (int g : candidates) {
      if (at::equal(w, W(g)) && at::equal(b, B(g)) &&
          (!with_blob || back.FindBytes("blob")->data == "generation " + std::to_string(g))) {
        return g;
      }
    }
  } catch (const std::exception&) {
  }
  return -1;
}

std::set<std::string> FilesIn(const std::string& dir) {
  std::set<std::string> names;
  for (const std::string& n : Env::Default()->List(dir)) names.insert(n);
  return names;
}

std::string Joined(const std::set<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += n + " ";
  return s;
}

// One scenario: `setup` makes the old checkpoint in `dir` (real filesystem); `run` makes the
// new one through `env`; a checkpoint loads as generation 1 (old) or 2 (new).
struct Scenario {
  const char* name;
  bool with_blob;
  std::function<void(const std::string& dir)> setup;
  std::function<std::vector<std::string>(const std::string& dir, Env* env)> run;  // warnings
};

std::vector<Scenario> Scenarios(const std::string& src) {
  std::vector<Scenario> out;
  SaveOptions two_threads;
  two_threads.thread_count = 2;
  out.push_back({"native save", true, [=](const std::string& dir) { save(Gen(1, true), dir, two_threads); },
                 [=](const std::string& dir, Env* env) {
                   return save(Gen(2, true), FileSystemWriter(dir, env), two_threads).warnings;
                 }});
  SaveOptions dcp = two_threads;
  dcp.format = Format::kDcp;
  out.push_back({"dcp save", false, [=](const std::string& dir) { save(Gen(1, false), dir, dcp); },
                 [=](const std::string& dir, Env* env) {
                   return save(Gen(2, false), DcpWriter(dir, env), two_threads).warnings;
                 }});
  // convert --overwrite: the new generation comes from `src`, converted to two FSDP ranks.
  ConvertOptions co;
  co.planner = "planners/to_fsdp.lua";
  co.overwrite = true;
  out.push_back({"convert --overwrite", true,
                 [=](const std::string& dir) {
                   TempDir old_src;
                   save(Gen(1, true), old_src.path());
                   convert(old_src.path(), dir, co);
                 },
                 [=](const std::string& dir, Env* env) {
                   FileSystemReader reader(src);
                   FileSystemWriter writer(dir, env);
                   return convert(reader, writer, co).warnings;
                 }});
  // A safetensors export replacing an earlier one (one shard: model.safetensors).
  SafetensorsExportOptions eo;
  eo.overwrite = true;
  out.push_back({"safetensors export", false,
                 [=](const std::string& dir) {
                   TempDir old_src;
                   save(Gen(1, false), old_src.path());
                   FileSystemReader reader(old_src.path());
                   ExportSafetensors(reader, dir, eo);
                 },
                 [=](const std::string& dir, Env* env) {
                   FileSystemReader reader(src);
                   SafetensorsExportOptions with_env = eo;
                   with_env.env = env;
                   return ExportSafetensors(reader, dir, with_env).warnings;
                 }});
  return out;
}

class FaultInjection : public ::testing::TestWithParam<int> {};

TEST_P(FaultInjection, EveryOperationIndexLeavesTheOldOrTheNewCheckpoint) {
  TempDir tmp;
  const std::string src = tmp / "src";
  save(Gen(2, true), src);
  const Scenario sc = Scenarios(src).at(static_cast<size_t>(GetParam()));
  const std::string dir = tmp / "ckpt";
  auto fresh = [&] {
    std::filesystem::remove_all(dir);
    sc.setup(dir);
  };

  // The files of each generation alone, and the number of operations of a clean run.
  fresh();
  const std::set<std::string> old_files = FilesIn(dir);
  int64_t total = 0;
  std::set<std::string> new_files;
  {
    FaultEnv env;
    env.Track(dir);
    sc.run(dir, &env);
    total = env.operations();
    new_files = FilesIn(dir);
    ASSERT_EQ(GenerationIn(dir, sc.with_blob, {2}), 2) << sc.name;
  }
  ASSERT_GT(total, 10) << sc.name;

  const Fault faults[] = {Fault::kPowerLoss, Fault::kEio, Fault::kEnospc, Fault::kEintr, Fault::kShortWrite};
  int outcomes[3] = {0, 0, 0};  // old, new, invalid
  for (Fault fault : faults) {
    for (int64_t n = 0; n < total; ++n) {
      fresh();
      FaultEnv env;
      env.Track(dir);
      env.Arm(fault, n);
      std::string error;
      std::vector<std::string> warnings;
      try {
        warnings = sc.run(dir, &env);
      } catch (const std::exception& e) {
        error = e.what();
      }
      const std::string at = std::string(sc.name) + ", fault " + std::to_string(static_cast<int>(fault)) +
                             " at operation " + std::to_string(n) + " of " + std::to_string(total) +
                             (error.empty() ? "" : ": " + error);
      ASSERT_TRUE(env.fired()) << at;
      // (A power loss after the rename leaves the save returning, with a warning that the
      // folder could not be synced: the process did not see the machine go off.)
      if (fault == Fault::kPowerLoss) env.DropUnsynced();
      const int g = GenerationIn(dir, sc.with_blob, {1, 2});
      ++outcomes[g < 0 ? 2 : g - 1];
      ASSERT_NE(g, -1) << "the folder holds neither checkpoint after " << at;
      if (fault != Fault::kPowerLoss) {
        // An error names the file it happened to; a failed save leaves the old checkpoint
        // and nothing else; a save that committed says what went wrong after the commit.
        std::set<std::string> expect = error.empty() ? new_files : old_files;
        if (!error.empty()) {
          // (Safetensors has no single commit point: an export that failed after placing a
          // file says it is incomplete, and the shard in place already holds the new data.)
          const bool partial = error.find("is incomplete") != std::string::npos;
          if (!partial) {
            EXPECT_EQ(g, 1) << at;
          }
          if (partial) expect = new_files;
          EXPECT_NE(error.find(env.fault_path()), std::string::npos) << at;
        } else {
          EXPECT_EQ(g, 2) << at;
        }
        std::set<std::string> have = FilesIn(dir);
        if (!warnings.empty()) {
          for (const auto& f : old_files) have.erase(f);  // kept on purpose, named in the warning
          for (const auto& f : old_files) expect.erase(f);
        }
        have.insert(kLockName);
        expect.insert(kLockName);
        EXPECT_EQ(Joined(have), Joined(expect)) << "debris after " << at;
      }
      // The next save cleans whatever a crash left behind.
      sc.run(dir, Env::Default());
      std::set<std::string> after = FilesIn(dir);
      after.insert(kLockName);
      std::set<std::string> expect_after = new_files;
      expect_after.insert(kLockName);
      // (file numbers move on; compare the count of data files)
      EXPECT_EQ(after.size(), expect_after.size()) << "files accumulate after " << at << ": " << Joined(after);
      ASSERT_EQ(GenerationIn(dir, sc.with_blob, {2}), 2) << at;
    }
  }
  std::printf("%s: %lld operations x 5 faults: old %d, new %d, invalid %d\n", sc.name,
              static_cast<long long>(total), outcomes[0], outcomes[1], outcomes[2]);
  EXPECT_GT(outcomes[0], 0);
  EXPECT_GT(outcomes[1], 0);
}

std::string ScenarioName(const ::testing::TestParamInfo<int>& info) {
  static const char* const kNames[] = {"NativeSave", "DcpSave", "ConvertOverwrite", "SafetensorsExport"};
  return kNames[info.param];
}

INSTANTIATE_TEST_SUITE_P(Scenarios, FaultInjection, ::testing::Values(0, 1, 2, 3), ScenarioName);

}  // namespace
}  // namespace dcpp
