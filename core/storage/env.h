// Env: every byte and every metadata operation that dcpp's writers and readers perform on a
// filesystem goes through one of these (leveldb's Env is the model). PosixEnv, the default,
// is the real filesystem; tests wrap it (EnvWrapper) to inject errors or to simulate a power
// loss at any operation (core/testing/fault_env.h).
//
// Every method throws dcpp::Error naming the path and the system error; nothing returns an
// error code. Paths are plain strings ("dir/name"); nothing here resolves them.
//
// Thread-safety: an Env is used from many threads at once (each writer thread opens its own
// files); implementations must be thread-safe. A FileSink/FileSource is used by one thread at
// a time. Env::Default() lives for the whole program and must not be deleted.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/storage/storage.h"

namespace dcpp {

// An exclusive lock on a file, released when destroyed (or when the process dies).
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // The real filesystem (PosixEnv).
  static Env* Default();

  // Creates `path` for writing. It must not exist yet (O_EXCL) and is never reached through a
  // symbolic link (O_NOFOLLOW): a name that exists, even as a dangling link, is an error.
  virtual std::unique_ptr<FileSink> NewFile(const std::string& path) = 0;
  // Opens an existing regular file for reading, refusing a symbolic link (O_NOFOLLOW) and
  // anything but a regular file (a FIFO or device would block or never end).
  virtual std::unique_ptr<FileSource> OpenFile(const std::string& path) = 0;
  // The same, following a symbolic link to a regular file: for files a user names or that
  // describe themselves (safetensors files, which the Hugging Face cache keeps as links).
  virtual std::unique_ptr<FileSource> OpenFileFollowingLinks(const std::string& path) = 0;
  // Atomically replaces `to` by `from` (rename(2)); both in the same folder.
  virtual void Rename(const std::string& from, const std::string& to) = 0;
  // Removes a file; a file that does not exist is not an error.
  virtual void Remove(const std::string& path) = 0;
  // Makes the entries of folder `dir` (creations, renames, removals) durable (fsync).
  virtual void SyncDir(const std::string& dir) = 0;
  // The names in folder `dir` without "." and ".." (empty if it does not exist).
  virtual std::vector<std::string> List(const std::string& dir) = 0;
  // True if `path` exists (a link counts, whatever it points to).
  virtual bool Exists(const std::string& path) = 0;
  // Creates `dir` and its missing parents.
  virtual void CreateDirs(const std::string& dir) = 0;
  // Takes an exclusive lock on `path` (created if missing, never through a link). With
  // `wait` false, throws at once when another process or object holds it; `what` names the
  // locked thing in that message.
  virtual std::unique_ptr<FileLock> Lock(const std::string& path, bool wait, const std::string& what) = 0;
};

// Forwards every call to another Env; override the calls to intercept. `target` must outlive
// the wrapper.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }
  std::unique_ptr<FileSink> NewFile(const std::string& path) override { return target_->NewFile(path); }
  std::unique_ptr<FileSource> OpenFile(const std::string& path) override { return target_->OpenFile(path); }
  std::unique_ptr<FileSource> OpenFileFollowingLinks(const std::string& path) override {
    return target_->OpenFileFollowingLinks(path);
  }
  void Rename(const std::string& from, const std::string& to) override { target_->Rename(from, to); }
  void Remove(const std::string& path) override { target_->Remove(path); }
  void SyncDir(const std::string& dir) override { target_->SyncDir(dir); }
  std::vector<std::string> List(const std::string& dir) override { return target_->List(dir); }
  bool Exists(const std::string& path) override { return target_->Exists(path); }
  void CreateDirs(const std::string& dir) override { target_->CreateDirs(dir); }
  std::unique_ptr<FileLock> Lock(const std::string& path, bool wait, const std::string& what) override {
    return target_->Lock(path, wait, what);
  }

 private:
  Env* target_;
};

// Reads the whole of `path` through `env`.
std::string ReadWholeFile(Env* env, const std::string& path);

}  // namespace dcpp
