// FileSystemWriter / FileSystemReader: debris removal under the lock, data file names only,
// the commit decided by the rename, links refused on the way in and out.
#include "core/storage/native/filesystem.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

StateDict Sample(float v) {
  StateDict sd;
  sd.AddTensor("w", at::full({4, 4}, v));
  return sd;
}

float Loaded(const std::string& dir) {
  const at::Tensor w = at::zeros({4, 4});
  StateDict sd;
  sd.AddTensor("w", w);
  load(sd, dir);
  return w[0][0].item<float>();
}

std::set<std::string> Names(const std::string& dir) {
  const auto v = Env::Default()->List(dir);
  return {v.begin(), v.end()};
}

TEST(FileNames, OnlyDataFileNamesAreWritable) {
  long r = 0, n = 0;
  EXPECT_TRUE(ParseDataFileName("__3_17.distcp", &r, &n));
  EXPECT_EQ(r, 3);
  EXPECT_EQ(n, 17);
  for (const char* bad : {".metadata", ".metadata.tmp", ".dcpp.lock", "notes.txt", "__1_2.distcpx", "__1_.distcp",
                          "___1_2.distcp", "__-1_2.distcp", "__1_2.distcp/", "../__1_2.distcp",
                          "__99999999999999999999_0.distcp", "__0_2147483648.distcp", "__ 1_2.distcp"}) {
    EXPECT_FALSE(IsDataFileName(bad)) << bad;
  }
  EXPECT_TRUE(IsDataFileName("__0_2147483647.distcp"));
  EXPECT_TRUE(IsDataFileTempName("__0_3.distcp.zstd.tmp"));
  EXPECT_TRUE(IsDataFileTempName("__1_0.distcp.tmp"));
  for (const char* bad : {"__0_3.distcp", "__0_3.distcp.zstd", "x__0_3.distcp.tmp", "__a_3.distcp.tmp", ".tmp", ""}) {
    EXPECT_FALSE(IsDataFileTempName(bad)) << bad;
  }
}

TEST(FileSystemWriter, BeginRemovesDebrisButNeitherCommittedNorForeignFiles) {
  TempDir dir;
  save(Sample(1), dir.path());
  const std::set<std::string> committed = Names(dir.path());
  WriteFile(dir / "__0_40.distcp", "debris of a killed save");
  WriteFile(dir / "__0_0.distcp.zstd.tmp", "a compressing commit killed");
  WriteFile(dir / ".metadata.tmp", "a failed commit");
  WriteFile(dir / "notes.txt", "the user's");
  WriteFile(dir / "notes.distcp.tmp", "the user's too");
  FileSystemWriter w(dir.path());
  w.Begin(false);
  std::set<std::string> expect = committed;
  expect.insert("notes.txt");
  expect.insert("notes.distcp.tmp");
  expect.insert(kLockName);
  EXPECT_EQ(Names(dir.path()), expect);
  w.End();
  EXPECT_FALSE(Names(dir.path()).count(kLockName));  // released with its file
  EXPECT_EQ(Loaded(dir.path()), 1.f);
}

TEST(FileSystemWriter, AnUnreadableCommittedMetadataMeansNothingIsRemoved) {
  TempDir dir;
  save(Sample(1), dir.path());
  WriteFile(dir / ".metadata", "garbage");
  WriteFile(dir / "__0_40.distcp", "debris?");
  FileSystemWriter w(dir.path());
  w.Begin(false);
  EXPECT_TRUE(Names(dir.path()).count("__0_40.distcp"));
  EXPECT_TRUE(Names(dir.path()).count("__0_0.distcp"));
}

TEST(FileSystemWriter, ASecondWriterIsRefusedWhileTheFirstHoldsTheFolder) {
  TempDir dir;
  save(Sample(1), dir.path());
  FileSystemWriter first(dir.path());
  first.Begin(false);
  const std::string err = ErrorOf([&] { save(Sample(2), dir.path()); });
  EXPECT_HAS(err, "save: prepare failed");
  EXPECT_HAS(err, dir.path() + " is locked");
  EXPECT_HAS(err, "nothing was committed");
  first.End();
  save(Sample(2), dir.path());
  EXPECT_EQ(Loaded(dir.path()), 2.f);
}

TEST(FileSystemWriter, CreatesOnlyNewDataFiles) {
  TempDir dir;
  FileSystemWriter w(dir.path());
  w.Begin(false);
  for (const char* bad : {".metadata", ".metadata.tmp", "notes.txt", "../__0_0.distcp"}) {
    EXPECT_HAS(ErrorOf([&] { w.Open(bad); }), "not a data file name");
  }
  w.Open("__0_0.distcp")->Finish();
  EXPECT_HAS(ErrorOf([&] { w.Open("__0_0.distcp"); }), "already exists");
}

TEST(FileSystemWriter, AFailedCommitLeavesThePreviousCheckpointAndNoTemporary) {
  TempDir dir;
  save(Sample(1), dir.path());
  // A folder where the temporary metadata must go: the commit cannot happen.
  ASSERT_EQ(::mkdir((dir / ".metadata.tmp").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((dir / ".metadata.tmp/x").c_str(), 0755), 0);
  const std::string err = ErrorOf([&] { save(Sample(2), dir.path()); });
  EXPECT_HAS(err, "the previous checkpoint");
  EXPECT_EQ(Loaded(dir.path()), 1.f);
  ::rmdir((dir / ".metadata.tmp/x").c_str());
  ::rmdir((dir / ".metadata.tmp").c_str());
  save(Sample(2), dir.path());
  EXPECT_EQ(Loaded(dir.path()), 2.f);
  EXPECT_EQ(Names(dir.path()).size(), 2u);  // .metadata, one data file (the lock goes with the save)
}

TEST(FileSystemReader, RefusesADataFileThatIsALink) {
  TempDir dir;
  save(Sample(1), dir.path());
  const std::string file = ParseMetadata(ReadFile(dir / ".metadata"), dir.path()).tensors(0).chunks(0).file();
  WriteFile(dir / "outside", ReadFile(dir / file));
  ASSERT_EQ(::unlink((dir / file).c_str()), 0);
  ASSERT_EQ(::symlink((dir / "outside").c_str(), (dir / file).c_str()), 0);
  const std::string err = ErrorOf([&] { Loaded(dir.path()); });
  EXPECT_HAS(err, file);
  EXPECT_HAS(err, "symbolic link");
}

TEST(FileSystemWriter, APlannerCannotPlaceDataInReservedOrForeignFiles) {
  TempDir dir;
  save(Sample(1), dir / "ckpt");
  WriteFile(dir / "ckpt/notes.txt", "the user's");
  for (const char* name : {".metadata", ".metadata.tmp", "notes.txt", ".dcpp.lock"}) {
    const std::string script = dir / "evil.lua";
    WriteFile(script, std::string("local P = {}\n"
                                  "function P.save_local(ctx, items) return items end\n"
                                  "function P.save_global(ctx, plans)\n"
                                  "  for _, items in ipairs(plans) do\n"
                                  "    for _, it in ipairs(items) do it.file = '") +
                          name + "' end\n  end\n  return plans\nend\nreturn P\n");
    SaveOptions so;
    so.planner = script;
    const std::string err = ErrorOf([&] { save(Sample(2), dir / "ckpt", so); });
    EXPECT_HAS(err, script);
    EXPECT_HAS(err, "not a data file name");
    EXPECT_EQ(Loaded(dir / "ckpt"), 1.f);
    EXPECT_EQ(ReadFile(dir / "ckpt/notes.txt"), "the user's");
  }
}

}  // namespace
}  // namespace dcpp
