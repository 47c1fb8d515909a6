// SafetensorsWriter: a small checkpoint written with it and read back with SafetensorsReader
// (dtypes, shapes, bytes, __metadata__, tensors in the library's order), older files replaced,
// nothing left behind by a writer that did not commit, and a failure at every operation
// leaving the old files, the new ones, or (after a first rename) a partial commit that says so.
#include "core/storage/safetensors/safetensors_writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/format/metadata.pb.h"
#include "core/storage/commit.h"
#include "core/storage/env.h"
#include "core/storage/safetensors/safetensors.h"
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
namespace fs = std::filesystem;

// The files in `dir` but the lock file (which a released lock may leave or remove).
std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename() != kLockName) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct Tensor {
  SafetensorsEntry entry;
  std::string bytes;
};

Tensor Make(const std::string& name, const std::string& dtype, std::vector<int64_t> shape, int64_t element_size) {
  Tensor t;
  t.entry.name = name;
  t.entry.dtype = dtype;
  t.entry.shape = std::move(shape);
  t.entry.element_size = element_size;
  int64_t n = element_size;
  for (int64_t s : t.entry.shape) n *= s;
  t.entry.nbytes = n;
  for (int64_t i = 0; i < n; ++i) t.bytes.push_back(static_cast<char>((i * 7 + name.size() * 31 + name[0]) & 0xff));
  return t;
}

// Two shards: {w F32 [2,3], b BF16 [3], i I64 [2], e F32 [0,4]} and {u U8 [5]}.
std::vector<std::vector<Tensor>> Sample() {
  return {{Make("w", "F32", {2, 3}, 4), Make("b", "BF16", {3}, 2), Make("i", "I64", {2}, 8),
           Make("e", "F32", {0, 4}, 4)},
          {Make("u", "U8", {5}, 1)}};
}

const std::vector<std::string> kShards = {SafetensorsShardName(1, 2), SafetensorsShardName(2, 2)};

// Writes Sample() into `dir` through `env` and commits it.
CommitReport WriteSample(const std::string& dir, Env* env) {
  SafetensorsWriter writer(dir, env);
  writer.Begin(/*wait_for_lock=*/false, "test folder " + dir);
  const std::vector<std::vector<Tensor>> shards = Sample();
  for (size_t s = 0; s < shards.size(); ++s) {
    std::map<std::string, const Tensor*> by_name;
    std::vector<SafetensorsEntry> entries;
    for (const Tensor& t : shards[s]) {
      by_name[t.entry.name] = &t;
      entries.push_back(t.entry);
    }
    const uint64_t data_start = writer.BeginShard(kShards[s], entries, {{"note", "written by a test"}});
    for (const SafetensorsEntry& e : entries) {
      const std::string& bytes = by_name.at(e.name)->bytes;
      if (!bytes.empty()) writer.Write(data_start + e.begin, bytes.data(), bytes.size());
    }
    writer.EndShard();
  }
  return writer.Commit();
}

TEST(SafetensorsWriter, WritesACheckpointThatTheReaderReadsBack) {
  TempDir tmp;
  const std::string dir = tmp / "out";
  EXPECT_TRUE(WriteSample(dir, Env::Default()).warnings.empty());
  EXPECT_EQ(Names(dir), (std::vector<std::string>{kShards[0], kShards[1], kSafetensorsIndex}));

  SafetensorsReader reader(dir);
  EXPECT_EQ(reader.files(), kShards);
  const proto::Metadata md = ParseMetadata(reader.ReadMetadata(), dir);
  EXPECT_EQ(md.planner_data().at("safetensors.format"), "pt");
  EXPECT_EQ(md.planner_data().at("safetensors.note"), "written by a test");
  std::map<std::string, const proto::TensorMeta*> got;
  for (const auto& t : md.tensors()) got[t.fqn()] = &t;
  const std::map<std::string, std::string> dcpp_dtype = {
      {"F32", "float32"}, {"BF16", "bfloat16"}, {"I64", "int64"}, {"U8", "uint8"}};
  int checked = 0;
  const std::vector<std::vector<Tensor>> sample = Sample();
  for (size_t s = 0; s < 2; ++s) {
    for (const Tensor& want : sample[s]) {
      ASSERT_TRUE(got.count(want.entry.name)) << want.entry.name;
      const proto::TensorMeta& t = *got.at(want.entry.name);
      EXPECT_EQ(t.dtype(), dcpp_dtype.at(want.entry.dtype)) << t.fqn();
      EXPECT_EQ(std::vector<int64_t>(t.shape().begin(), t.shape().end()), want.entry.shape) << t.fqn();
      ASSERT_EQ(t.chunks_size(), 1) << t.fqn();
      const proto::ChunkMeta& c = t.chunks(0);
      EXPECT_EQ(c.file(), kShards[s]) << t.fqn();
      ASSERT_EQ(c.length(), want.bytes.size()) << t.fqn();
      std::string bytes(c.length(), '\0');
      if (c.length() > 0) reader.Open(c.file())->ReadAt(c.offset(), bytes.data(), bytes.size());
      EXPECT_EQ(bytes, want.bytes) << t.fqn();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 5);
  EXPECT_EQ(got.size(), 5u);
  // As the safetensors library lays them out: by element size (largest first), then by name.
  EXPECT_LT(got.at("i")->chunks(0).offset(), got.at("w")->chunks(0).offset());
  EXPECT_LT(got.at("w")->chunks(0).offset(), got.at("b")->chunks(0).offset());
  // The index names every tensor's shard and the total of their bytes.
  const std::string index = ReadFile(tmp / ("out/" + std::string(kSafetensorsIndex)));
  EXPECT_HAS(index, "\"total_size\": 51");
  EXPECT_HAS(index, "\"u\": \"" + kShards[1] + "\"");
}

TEST(SafetensorsWriter, BeginShardOrdersTheTensorsAndPadsTheHeader) {
  TempDir tmp;
  SafetensorsWriter writer(tmp.path(), Env::Default());
  writer.Begin(false, "test folder");
  std::vector<SafetensorsEntry> entries;
  const std::vector<std::vector<Tensor>> sample = Sample();
  for (const Tensor& t : sample[0]) entries.push_back(t.entry);
  const uint64_t data_start = writer.BeginShard("x.safetensors", entries, {});
  EXPECT_EQ(data_start % 8, 0u);
  std::vector<std::string> order;
  for (const SafetensorsEntry& e : entries) order.push_back(e.name);
  EXPECT_EQ(order, (std::vector<std::string>{"i", "e", "w", "b"}));
  uint64_t pos = 0;
  for (const SafetensorsEntry& e : entries) {
    EXPECT_EQ(e.begin, pos) << e.name;
    pos += static_cast<uint64_t>(e.nbytes);
    EXPECT_EQ(e.end, pos) << e.name;
  }
  writer.EndShard();
  // Not committed: only the temporary, which the writer removes when destroyed.
  EXPECT_TRUE(fs::exists(tmp / "x.safetensors.tmp"));
}

TEST(SafetensorsWriter, ReplacesTheOlderSafetensorsFilesOnly) {
  TempDir tmp;
  const std::string dir = tmp / "out";
  fs::create_directories(dir);
  for (const char* name : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                           "model-00003-of-00003.safetensors", "model.safetensors.index.json", "README.md"}) {
    WriteFile(dir + "/" + name, "old");
  }
  {
    SafetensorsWriter writer(dir, Env::Default());
    writer.Begin(false, "test folder");
    EXPECT_EQ(writer.existing(),
              (std::vector<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                        "model-00003-of-00003.safetensors", "model.safetensors.index.json"}));
  }
  EXPECT_TRUE(WriteSample(dir, Env::Default()).warnings.empty());
  EXPECT_EQ(Names(dir), (std::vector<std::string>{"README.md", kShards[0], kShards[1], kSafetensorsIndex}));
  EXPECT_EQ(ReadFile(dir + "/README.md"), "old");
}

TEST(SafetensorsWriter, WithoutCommitLeavesNothingBehind) {
  TempDir tmp;
  const std::string dir = tmp / "new";
  {
    SafetensorsWriter writer(dir, Env::Default());
    writer.Begin(false, "test folder");
    std::vector<SafetensorsEntry> entries = {Sample()[1][0].entry};
    writer.BeginShard(kShards[0], entries, {});
    EXPECT_TRUE(fs::exists(dir + "/" + kShards[0] + ".tmp"));
  }
  EXPECT_FALSE(fs::exists(dir));  // created by Begin, removed again

  fs::create_directories(dir);
  WriteFile(dir + "/" + kShards[0], "old");
  {
    SafetensorsWriter writer(dir, Env::Default());
    writer.Begin(false, "test folder");
    std::vector<SafetensorsEntry> entries = {Sample()[1][0].entry};
    writer.BeginShard(kShards[0], entries, {});
    writer.EndShard();
  }
  EXPECT_EQ(Names(dir), (std::vector<std::string>{kShards[0]}));
  EXPECT_EQ(ReadFile(dir + "/" + kShards[0]), "old");
}

TEST(SafetensorsWriter, ASecondWriterIsRefusedByTheLock) {
  TempDir tmp;
  SafetensorsWriter first(tmp.path(), Env::Default());
  first.Begin(false, "test folder " + tmp.path());
  SafetensorsWriter second(tmp.path(), Env::Default());
  EXPECT_HAS(ErrorOf([&] { second.Begin(false, "test folder " + tmp.path()); }), "test folder " + tmp.path());
}

TEST(SafetensorsWriter, AFailureAtEachOperationLeavesTheOldTheNewOrAPartialCommit) {
  TempDir tmp;
  const std::string dir = tmp / "out";
  const std::string old_shard = "model.safetensors";
  auto fresh = [&] {
    fs::remove_all(dir);
    fs::create_directories(dir);
    WriteFile(dir + "/" + old_shard, "old");
    WriteFile(dir + "/" + kShards[0], "old");
  };
  fresh();
  int64_t total = 0;
  {
    FaultEnv env;
    WriteSample(dir, &env);
    total = env.operations();
  }
  const std::vector<std::string> old_files = {kShards[0], old_shard};  // sorted
  const std::vector<std::string> new_files = {kShards[0], kShards[1], kSafetensorsIndex};
  int outcomes[4] = {0, 0, 0, 0};  // old, new, new with a warning, partial
  for (int64_t n = 0; n < total; ++n) {
    fresh();
    FaultEnv env;
    env.Arm(Fault::kEio, n);
    std::string error;
    bool partial = false;
    CommitReport report;
    try {
      report = WriteSample(dir, &env);
    } catch (const PartialCommitError& e) {
      partial = true;
      error = e.what();
    } catch (const Error& e) {
      error = e.what();
    }
    const std::string at = "EIO at operation " + std::to_string(n) + ": " + error;
    ASSERT_TRUE(env.fired()) << at;
    const std::vector<std::string> have = Names(dir);
    if (partial) {
      ++outcomes[3];
      EXPECT_HAS(error, "is incomplete");
      EXPECT_HAS(error, env.fault_path());
      // The first shard is in place; the temporaries are gone; the old files are kept.
      EXPECT_NE(ReadFile(dir + "/" + kShards[0]), "old") << at;
      EXPECT_TRUE(fs::exists(dir + "/" + old_shard)) << at;
      for (const std::string& name : have) EXPECT_EQ(name.find(".tmp"), std::string::npos) << at;
    } else if (!error.empty()) {
      ++outcomes[0];
      EXPECT_HAS(error, env.fault_path());
      EXPECT_EQ(have, old_files) << at;
      EXPECT_EQ(ReadFile(dir + "/" + kShards[0]), "old") << at;
    } else {
      ++outcomes[report.warnings.empty() ? 1 : 2];
      EXPECT_EQ(SafetensorsReader(dir).files(), (std::vector<std::string>{kShards[0], kShards[1]})) << at;
      if (report.warnings.empty()) {
        EXPECT_EQ(have, new_files) << at;
      }
    }
  }
  // Partial: the second and the third (index) renames. After the commit point: the second
  // folder sync and the removal of the old shard (warnings), and the writer's removal of its
  // three temporaries, already renamed, when destroyed (ignored).
  EXPECT_EQ(outcomes[3], 2);
  EXPECT_EQ(outcomes[2], 2);
  EXPECT_EQ(outcomes[1], 3);
  EXPECT_EQ(outcomes[0], total - 7);
}

}  // namespace
}  // namespace dcpp
