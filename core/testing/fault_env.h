// Test helper: an Env over the real filesystem that counts every operation (each Env call,
// each WriteAt/Finish of a file being written, each ReadAt) and, at a chosen operation index,
// either
//  - simulates a power loss (kPowerLoss): that operation and every later one fail without
//    touching the disk, and DropUnsynced() then rewrites the folder as a machine would find
//    it after rebooting: only directory entries made durable by a SyncDir of their folder,
//    each holding only the bytes made durable by its file's Finish (fsync); or
//  - fails that one operation (kError) with EIO, ENOSPC, EINTR, or a short write (half of
//    the bytes written, then ENOSPC), naming the file, and lets the others through.
// leveldb's fault_injection_test (DropUnsyncedFileData, RemoveFilesCreatedAfterLastDirSync)
// is the model. Tracks the files of the folders it is told about (Track); meant for small
// checkpoints (durable contents are kept in memory). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/storage/env.h"

namespace dcpp::testing {

class FaultEnv final : public EnvWrapper {
 public:
  enum class Fault { kNone, kPowerLoss, kEio, kEnospc, kEintr, kShortWrite };

  FaultEnv() : EnvWrapper(Env::Default()) {}

  // Records the folder `dir` as it is now: every file in it durable, with its content.
  void Track(const std::string& dir);
  // Arms `fault` at operation `index` (0-based, counted from now).
  void Arm(Fault fault, int64_t index);
  int64_t operations() const;
  bool fired() const;
  // The path of the operation that the armed fault hit ("" before it fired).
  std::string fault_path() const;
  // After a power loss: rewrites every tracked folder to its durable state.
  void DropUnsynced();

  std::unique_ptr<FileSink> NewFile(const std::string& path) override;
  std::unique_ptr<FileSource> OpenFile(const std::string& path) override;
  std::unique_ptr<FileSource> OpenFileFollowingLinks(const std::string& path) override { return OpenFile(path); }
  void Rename(const std::string& from, const std::string& to) override;
  void Remove(const std::string& path) override;
  void SyncDir(const std::string& dir) override;
  std::vector<std::string> List(const std::string& dir) override;
  bool Exists(const std::string& path) override;
  void CreateDirs(const std::string& dir) override;
  std::unique_ptr<FileLock> Lock(const std::string& path, bool wait, const std::string& what) override;

  // Counts one operation on `path`; throws the armed fault when it is due. `length` > 0 with
  // a short write armed: returns how many bytes to write before failing (else 0).
  size_t Step(const char* op, const std::string& path, size_t length = 0);
  // A file being written was synced: its current content becomes durable.
  void Synced(const std::string& path);

 private:
  struct Dir {
    std::map<std::string, int64_t> live, durable;  // name -> node
  };
  static std::pair<std::string, std::string> Split(const std::string& path);
  Dir* Find(const std::string& dir);  // nullptr if untracked

  mutable std::mutex mu_;
  std::map<std::string, Dir> dirs_;                  // guarded by mu_
  std::map<int64_t, std::string> durable_content_;   // node -> bytes; guarded by mu_
  int64_t next_node_ = 0;                            // guarded by mu_
  int64_t ops_ = 0;                                  // guarded by mu_
  Fault fault_ = Fault::kNone;                       // guarded by mu_
  int64_t fault_at_ = -1;                            // guarded by mu_
  bool fired_ = false;                               // guarded by mu_
  std::string fired_path_;                           // guarded by mu_
  bool lost_power_ = false;                          // guarded by mu_
};

}  // namespace dcpp::testing
