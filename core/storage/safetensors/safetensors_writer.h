// SafetensorsWriter: writes a Hugging Face sharded safetensors checkpoint into a folder, the
// counterpart of SafetensorsReader (safetensors.h, which describes the file layout):
//
//   DIR/model-00001-of-00003.safetensors   (SafetensorsShardName)
//   DIR/...
//   DIR/model.safetensors.index.json        {"metadata": {"total_size": N},
//                                             "weight_map": {tensor name: shard file}}
//
// Begin() takes DIR's .dcpp.lock. Each shard is written as `<name>.tmp`: BeginShard() orders
// its tensors as the safetensors library writes them (by element size, largest first, so that
// every tensor is aligned to its element size; then by name) and writes the header (padded
// with spaces to a multiple of 8); the caller then writes each tensor's bytes (Write) where
// BeginShard placed them, contiguous, with no holes; EndShard() fsyncs the file. Commit()
// writes the index as a temporary too and puts every file into place through CommitFiles
// (core/storage/commit.h): the shards in order, the index last, then removes the safetensors
// files that DIR held at Begin() and the new files do not replace. Safetensors has no single
// commit point: a failure after the first rename is a PartialCommitError.
//
// Destroyed without a Commit(), or after one that failed, it removes the temporaries still in
// DIR, and DIR itself when Begin() created it and no new file is in place.
//
// Thread-safety: used by one thread; one writer per folder (the lock). `env` must outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/storage/commit.h"
#include "core/storage/env.h"
#include "core/storage/storage.h"

namespace dcpp {

// "model-00002-of-00005.safetensors" for shard 2 of 5.
std::string SafetensorsShardName(int index, int count);

// One tensor of a shard.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // safetensors' name ("F32"; see DtypeToSafetensors)
  std::vector<int64_t> shape;
  int64_t element_size = 0;
  int64_t nbytes = 0;
  // Set by BeginShard: the header's data_offsets [begin, end), in the data area.
  uint64_t begin = 0;
  uint64_t end = 0;
};

class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string dir, Env* env);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Creates DIR if missing and takes its lock: waits for another writer (`wait_for_lock`) or
  // fails at once; `what` names DIR in that message ("export destination DIR").
  void Begin(bool wait_for_lock, const std::string& what);
  // The safetensors files (shards and indexes) DIR held at Begin(), sorted.
  const std::vector<std::string>& existing() const { return existing_; }

  // Starts shard `name`: sorts `tensors` into data order, sets their offsets, and writes the
  // header, whose `__metadata__` is {"format": "pt"} and then `metadata`. Returns the size of
  // the header (8 + its length): tensor t's bytes go at that + t.begin in the file.
  uint64_t BeginShard(const std::string& name, std::vector<SafetensorsEntry>& tensors,
                      const std::map<std::string, std::string>& metadata);
  // Writes bytes of the current shard at `offset` in its file.
  void Write(uint64_t offset, const void* data, size_t size);
  // Finishes (fsyncs) the current shard.
  void EndShard();

  // Writes the index of the shards written, then commits as described above; the messages
  // are the caller's (CommitMessages). Returns what failed after the commit point.
  CommitReport Commit(const CommitMessages& messages = {});

 private:
  FileSink* Create(const std::string& name);

  const std::string dir_;
  Env* const env_;
  std::unique_ptr<FileLock> lock_;
  std::vector<std::string> existing_;
  std::vector<std::string> shards_;  // written, in order
  std::map<std::string, std::string> weight_map_;  // tensor name -> shard
  int64_t total_size_ = 0;
  std::unique_ptr<FileSink> sink_;
  std::vector<std::string> created_;  // temporaries, plain names
  bool created_dir_ = false;
  bool committed_ = false;
  bool partly_committed_ = false;
};

}  // namespace dcpp
