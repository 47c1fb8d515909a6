// ChunkReader: how load() reads one saved chunk into the targets that need it, on one
// thread. A chunk needed whole is read once, front to back, and its checksum checked (straight
// into a contiguous CPU target, by GPUDirect Storage into a CUDA one when asked for, otherwise
// through the staging ring); a chunk needed in part is read as the byte runs of each overlap,
// coalesced where the gaps are small. Byte moves and checksum checks go through chunk_io.h.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/engine/save_load.h"
#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/model/state_dict.h"
#include "core/storage/storage.h"

namespace dcpp {

class StagingRing;

namespace internal {

// A target region fed by one saved chunk.
struct Piece {
  LocalChunk* target;
  Box overlap;  // global coordinates
};

// Everything read from one saved chunk.
struct Unit {
  const proto::TensorMeta* meta;
  const proto::ChunkMeta* chunk;
  Box box;
  std::vector<Piece> pieces;
};

struct Counters {
  std::atomic<int64_t> bytes_read{0}, read_calls{0}, verified{0}, staged{0}, staging_host{0};
  std::atomic<int64_t> gpudirect{0};
  std::mutex mu;
  std::string gpudirect_note;  // the first reason GPUDirect was not used

  std::string direct_io_note;  // the first reason O_DIRECT was not used

  void Note(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (gpudirect_note.empty()) gpudirect_note = why;
  }
  void NoteDirectIo(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (direct_io_note.empty()) direct_io_note = why;
  }
};

class ChunkReader {
 public:
  ChunkReader(StorageReader& reader, const LoadOptions& opt, Counters& counters);
  ~ChunkReader();

  // Reads chunk `u` into its pieces. Throws dcpp::Error (a corrupt chunk names its key, chunk
  // and file; other errors are for the caller to annotate).
  void Read(const Unit& u);
  // Completes the copies still in flight out of the staging ring.
  void Drain();
  const StagingRing& ring() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace internal
}  // namespace dcpp
