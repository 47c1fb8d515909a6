// FileSystemWriter / FileSystemReader: the native format in a local (or shared) folder.
//
//   DIR/.metadata             committed metadata (written as .metadata.tmp, fsynced, renamed)
//   DIR/__<rank>_<n>.distcp   data files, written with pwrite and fsynced before the commit
//
// A save never touches the files of the checkpoint already committed in DIR: new data files
// get numbers above every existing one, and older files are removed only after the new
// .metadata is in place. See docs/format.md.
#pragma once

#include <string>

#include "core/storage/storage.h"

namespace dcpp {

class FileSystemWriter final : public StorageWriter {
 public:
  explicit FileSystemWriter(std::string dir);
  void Begin() override;
  int FirstFreeFileIndex() override;
  bool HasCommitted() override;
  std::vector<std::string> CommittedFiles() override;
  std::unique_ptr<FileSink> Open(const std::string& name) override;
  void Commit(const std::string& metadata, const std::vector<std::string>& keep) override;
  void Abort(const std::vector<std::string>& created) override;
  std::string Describe() const override { return dir_; }

 private:
  std::string dir_;
};

class FileSystemReader final : public StorageReader {
 public:
  explicit FileSystemReader(std::string dir);
  std::string ReadMetadata() override;
  std::unique_ptr<FileSource> Open(const std::string& name) override;
  std::string Describe() const override { return dir_; }
  std::string LocalPath(const std::string& name) const override { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

// True for a data file name dcpp writes or accepts in metadata: a plain name, no '/', not
// "." or "..", no NUL, not empty.
bool IsPlainFileName(const std::string& name);

// Splits a data file name "__<rank>_<n>.distcp" (dcpp's and PyTorch DCP's) into its rank and
// number; false for any other name.
bool ParseDataFileName(const std::string& name, long* rank, long* n);

}  // namespace dcpp
