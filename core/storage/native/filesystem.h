// FileSystemWriter / FileSystemReader: the native format in a local (or shared) folder.
//
//   DIR/.metadata             committed metadata (written as .metadata.tmp, fsynced, renamed)
//   DIR/__<rank>_<n>.distcp   data files, created new (O_EXCL) and fsynced before the commit
//   DIR/.dcpp.lock            taken (flock) by the one writer committing into DIR
//
// A save never touches the files of the checkpoint already committed in DIR: new data files
// get numbers above every existing one, and older files are removed only after the new
// .metadata is in place. The rename of .metadata.tmp to .metadata decides the outcome; see
// docs/format.md ("Commit protocol"). All I/O goes through an Env (default: the real
// filesystem), which must outlive the writer or reader.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/format/file_names.h"
#include "core/storage/env.h"
#include "core/storage/storage.h"

namespace dcpp {

// The data files that committed metadata bytes name, or nullopt when they cannot be read (a
// writer then removes no debris, since it cannot tell debris from live files).
using CommittedFilesFn = std::function<std::optional<std::vector<std::string>>(const std::string& metadata)>;

// The CommittedFilesFn of the native format: the data files a native .metadata names.
std::optional<std::vector<std::string>> NativeMetadataFiles(const std::string& metadata);

class FileSystemWriter final : public StorageWriter {
 public:
  explicit FileSystemWriter(std::string dir, Env* env = Env::Default());
  // `committed_files` reads another format's metadata (DcpWriter's pickle).
  FileSystemWriter(std::string dir, Env* env, CommittedFilesFn committed_files);
  void Begin(bool wait_for_lock) override;
  void End() override;
  int FirstFreeFileIndex() override;
  bool HasCommitted() override;
  std::vector<std::string> CommittedFiles() override;
  std::unique_ptr<FileSink> Open(const std::string& name) override;
  CommitReport Commit(const std::string& metadata, const std::vector<std::string>& keep) override;
  void Abort(const std::vector<std::string>& created) override;
  std::string Describe() const override { return dir_; }
  Env* env() const { return env_; }

 private:
  std::optional<std::vector<std::string>> ReadCommittedFiles();
  std::string dir_;
  Env* env_;
  CommittedFilesFn committed_files_;
  std::unique_ptr<FileLock> lock_;
};

class FileSystemReader final : public StorageReader, public LocalFiles {
 public:
  explicit FileSystemReader(std::string dir, Env* env = Env::Default());
  // `follow_links`: open data files through symbolic links (for self-describing files such as
  // safetensors; native and DCP checkpoints never follow them).
  FileSystemReader(std::string dir, Env* env, bool follow_links);
  std::string ReadMetadata() override;
  std::unique_ptr<FileSource> Open(const std::string& name) override;
  std::string Describe() const override { return dir_; }
  std::string LocalPath(const std::string& name) const override { return dir_ + "/" + name; }
  Env* env() const { return env_; }

 private:
  std::string dir_;
  Env* env_;
  bool follow_links_ = false;
};

// dcpp always records checksums in a native checkpoint, so native metadata whose checksum
// algorithm is "none" was edited and nothing in the folder can be checked against it. Readers
// of data (load, convert, diff, export) call this with their verify_checksums: when it is on
// and `reader` is native (a FileSystemReader) with such metadata, it throws an error naming
// the folder and how to read it anyway. Other formats (DCP, safetensors) have no XXH3 by design.
void RefuseUncheckedNative(const StorageReader& reader, const proto::Metadata& md, bool verify_checksums,
                           const std::string& step);

}  // namespace dcpp
