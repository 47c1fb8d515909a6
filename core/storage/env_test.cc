// PosixEnv: new files are new (O_EXCL), links are never followed, only regular files are
// read, locks exclude a second writer, and every error names the path.
#include "core/storage/env.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

TEST(PosixEnv, WritesReadsAndSyncs) {
  TempDir dir;
  Env* env = Env::Default();
  auto sink = env->NewFile(dir / "f");
  sink->WriteAt(5, "world", 5);
  sink->WriteAt(0, "hello", 5);
  sink->Finish();
  EXPECT_EQ(ReadWholeFile(env, dir / "f"), "helloworld");
  auto src = env->OpenFile(dir / "f");
  EXPECT_EQ(src->Size(), 10u);
  char buf[3];
  src->ReadAt(4, buf, 3);
  EXPECT_EQ(std::string(buf, 3), "owo");
  EXPECT_HAS(ErrorOf([&] { src->ReadAt(8, buf, 3); }), "is truncated");
  env->SyncDir(dir.path());
  env->Rename(dir / "f", dir / "g");
  EXPECT_FALSE(env->Exists(dir / "f"));
  EXPECT_TRUE(env->Exists(dir / "g"));
  env->Remove(dir / "g");
  env->Remove(dir / "g");  // already gone: fine
  EXPECT_TRUE(env->List(dir.path()).empty());
  EXPECT_TRUE(env->List(dir / "missing").empty());
  env->CreateDirs(dir / "a/b/c");
  EXPECT_TRUE(env->Exists(dir / "a/b/c"));
  WriteFile(dir / "plain", "x");
  EXPECT_HAS(ErrorOf([&] { env->CreateDirs(dir / "plain"); }), "is not a folder");
}

TEST(PosixEnv, NeverWritesIntoAnExistingFileOrThroughALink) {
  TempDir dir;
  Env* env = Env::Default();
  WriteFile(dir / "notes.txt", "mine");
  std::string err = ErrorOf([&] { env->NewFile(dir / "notes.txt"); });
  EXPECT_HAS(err, dir / "notes.txt");
  EXPECT_HAS(err, "already exists");
  EXPECT_EQ(ReadFile(dir / "notes.txt"), "mine");
  ASSERT_EQ(::symlink((dir / "elsewhere").c_str(), (dir / "link").c_str()), 0);
  EXPECT_HAS(ErrorOf([&] { env->NewFile(dir / "link"); }), "already exists");
  EXPECT_FALSE(env->Exists(dir / "elsewhere"));  // nothing was written through the link
}

TEST(PosixEnv, ReadsOnlyRegularFilesNeverThroughALink) {
  TempDir dir;
  Env* env = Env::Default();
  WriteFile(dir / "secret", "passwords");
  ASSERT_EQ(::symlink((dir / "secret").c_str(), (dir / "link").c_str()), 0);
  std::string err = ErrorOf([&] { env->OpenFile(dir / "link"); });
  EXPECT_HAS(err, dir / "link");
  EXPECT_HAS(err, "symbolic link");
  // Self-describing files a user names (the Hugging Face cache links its safetensors files).
  EXPECT_EQ(env->OpenFileFollowingLinks(dir / "link")->Size(), 9u);
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0644), 0);
  EXPECT_HAS(ErrorOf([&] { env->OpenFile(dir / "fifo"); }), "not a regular file");  // and no hang
  EXPECT_HAS(ErrorOf([&] { env->OpenFileFollowingLinks(dir / "fifo"); }), "not a regular file");
  EXPECT_HAS(ErrorOf([&] { env->OpenFile(dir.path()); }), "not a regular file");
  EXPECT_HAS(ErrorOf([&] { env->OpenFile(dir / "missing"); }), "No such file");
}

TEST(PosixEnv, ALockExcludesASecondHolderUntilReleased) {
  TempDir dir;
  Env* env = Env::Default();
  auto first = env->Lock(dir / ".dcpp.lock", false, "checkpoint folder X");
  std::string err = ErrorOf([&] { env->Lock(dir / ".dcpp.lock", false, "checkpoint folder X"); });
  EXPECT_HAS(err, "checkpoint folder X is locked");
  EXPECT_HAS(err, "wait_for_lock");
  // A waiter gets it once the holder lets go.
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    first.reset();
  });
  const auto t0 = std::chrono::steady_clock::now();
  auto second = env->Lock(dir / ".dcpp.lock", true, "checkpoint folder X");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  release.join();
  EXPECT_NE(second, nullptr);
  EXPECT_TRUE(env->Exists(dir / ".dcpp.lock"));
  second.reset();
  EXPECT_FALSE(env->Exists(dir / ".dcpp.lock"));  // a released lock leaves no file behind
}

}  // namespace
}  // namespace dcpp
