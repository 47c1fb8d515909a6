// Test helper: a FileSystemWriter that fails with "No space left on device" once a number of
// bytes has been written, as a full disk would (the file it was writing is left behind, half
// written).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/storage/native/filesystem.h"

namespace dcpp::testing {

class FullDiskWriter final : public StorageWriter {
 public:
  FullDiskWriter(std::string dir, int64_t budget) : inner_(std::move(dir)), budget_(budget) {}
  void Begin(bool wait) override { inner_.Begin(wait); }
  void End() override { inner_.End(); }
  int FirstFreeFileIndex() override { return inner_.FirstFreeFileIndex(); }
  bool HasCommitted() override { return inner_.HasCommitted(); }
  std::vector<std::string> CommittedFiles() override { return inner_.CommittedFiles(); }
  std::unique_ptr<FileSink> Open(const std::string& name) override {
    struct Sink final : FileSink {
      std::unique_ptr<FileSink> in;
      int64_t* budget;
      void WriteAt(uint64_t off, const void* d, size_t n) override {
        if ((*budget -= static_cast<int64_t>(n)) < 0) throw Error("No space left on device");
        in->WriteAt(off, d, n);
      }
      void Finish() override { in->Finish(); }
    };
    auto s = std::make_unique<Sink>();
    s->in = inner_.Open(name);
    s->budget = &budget_;
    return s;
  }
  CommitReport Commit(const std::string& md, const std::vector<std::string>& keep) override {
    return inner_.Commit(md, keep);
  }
  void Abort(const std::vector<std::string>& created) override { inner_.Abort(created); }
  std::string Describe() const override { return inner_.Describe(); }

 private:
  FileSystemWriter inner_;
  int64_t budget_;
};

}  // namespace dcpp::testing
