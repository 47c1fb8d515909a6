// Storage interfaces: where a checkpoint's bytes live. The engine decides what to write where
// (file names, byte offsets, checksums); a backend only moves bytes and commits.
//
// Reference implementation to copy for a new backend: core/storage/native/filesystem.{h,cc};
// a new format registers itself (core/storage/registry.h) and joins core/storage/formats/BUILD.
//
// Thread-safety: Open() and the FileSink/FileSource it returns may be used from several
// threads at once as long as each sink/source is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/format/metadata.pb.h"
#include "core/format/plan.pb.h"

namespace dcpp {

// The buffer of a backend that streams chunk data through memory of its own (the DCP writer,
// zstd, torch.save checks): a chunk needs no buffer of its own size. (The engine's hashed reads
// and writes use a smaller block, core/engine/chunk_io.h: kHashedBlockBytes.)
constexpr int64_t kIoBlockBytes = 1 << 20;

// Bytes a backend keeps free before and after an item's data in its file, to wrap the item
// (PyTorch DCP's format puts each chunk inside its own torch.save archive).
struct ItemFrame {
  uint64_t prefix = 0;
  uint64_t suffix = 0;
};

// A data file being written. WriteAt may be called in any order; Finish makes the bytes
// durable (fsync) and closes. A sink destroyed without Finish leaves a file that no
// committed metadata references.
class FileSink {
 public:
  virtual ~FileSink() = default;
  virtual void WriteAt(uint64_t offset, const void* data, size_t length) = 0;
  virtual void Finish() = 0;
};

// Two reads close together in a file are merged into one read of the whole span (the gap's
// bytes are read and dropped) when the gap is at most kReadGapBytes and at most 5% of the
// merged read: one call instead of two then costs less than the extra bytes. The engine counts
// bytes and calls with the same rule (CoalesceRuns in core/model/box.h).
constexpr uint64_t kReadGapBytes = 4096;

// Whether a read of file bytes [begin, end) merges the next one, [next, next_end).
inline bool MergesReads(uint64_t begin, uint64_t end, uint64_t next, uint64_t next_end) {
  return next >= end && next - end <= kReadGapBytes && (next - end) * 20 <= next_end - begin;
}

// One read of a batch: `length` bytes at file offset `offset` into `data`.
struct ReadRequest {
  uint64_t offset = 0;
  void* data = nullptr;
  size_t length = 0;
};

class FileSource {
 public:
  virtual ~FileSource() = default;
  // Reads exactly `length` bytes or throws dcpp::Error naming the file (e.g. truncated).
  virtual void ReadAt(uint64_t offset, void* data, size_t length) = 0;
  virtual uint64_t Size() = 0;
  // Reads every request exactly, as ReadAt would, in any order and possibly at once; throws
  // dcpp::Error naming the file. Destinations must not overlap. The default merges requests
  // sorted by offset as MergesReads says into one ReadAt through a scratch buffer and reads
  // the others one by one; a local file reads them with preadv or io_uring
  // (core/storage/batch_read.h).
  virtual void ReadV(const std::vector<ReadRequest>& requests);
};

// What a commit did once the new metadata is in place: anything that went wrong afterwards
// (a folder sync that failed, so the commit may not survive a power loss; a file of an older
// generation that could not be removed) is a warning, never an error.
struct CommitReport {
  std::vector<std::string> warnings;
};

class StorageWriter {
 public:
  virtual ~StorageWriter() = default;
  // Coordinator only, before any rank writes: prepares the destination and takes it for this
  // save (a lock that a second writer into the same destination waits for, or is refused by
  // at once unless `wait_for_lock`), held until End(). Removes the debris of failed saves:
  // files the committed checkpoint does not use.
  virtual void Begin(bool wait_for_lock) = 0;
  // Coordinator only, after Begin, whatever happened since: releases the destination.
  virtual void End() {}
  // Coordinator only, after Begin: data file numbers from here on are unused in the folder,
  // so a new save never overwrites a file that the committed checkpoint uses.
  virtual int FirstFreeFileIndex() = 0;
  // True when the destination already holds a committed checkpoint.
  virtual bool HasCommitted() = 0;
  // Data files that the committed checkpoint in the destination uses (empty if none).
  virtual std::vector<std::string> CommittedFiles() = 0;
  // Any rank: creates a data file, which must not exist yet. `name` is a data file name
  // (IsDataFileName).
  virtual std::unique_ptr<FileSink> Open(const std::string& name) = 0;
  // Coordinator only, after every rank finished its files: atomically publishes `metadata`.
  // Throws only when the commit did not happen (the previous checkpoint is untouched). Once
  // the new metadata is in place it returns; data files not in `keep` are then removed (older
  // generations, debris of failed saves), and whatever fails from there on is a warning.
  virtual CommitReport Commit(const std::string& metadata, const std::vector<std::string>& keep) = 0;
  // Any rank, after a save that certainly did not commit: removes the data files it created
  // in this save. Never called when the outcome is unknown.
  virtual void Abort(const std::vector<std::string>& created) = 0;
  virtual std::string Describe() const = 0;  // for messages, e.g. the folder

  // Whether the writer stores blobs encoded (it is a BytesEncoder).
  bool EncodesBytes() const;
};

class StorageReader;

// Optional capabilities. A backend's writer or reader may also derive from any of these small
// interfaces; the engine asks for one with As<Capability>(backend) (a dynamic_cast), so a
// backend without a use for one carries nothing.

// Writers of formats that wrap items (PyTorch DCP puts each chunk inside its own torch.save
// archive). The engine places each item's data after Frame(item).prefix free bytes and keeps
// Frame(item).suffix bytes free after it; every rank then calls Placed() with the items it will
// write (file, file_offset set) before opening any file; the backend fills the frames in when
// each sink finishes.
class ItemFramer {
 public:
  virtual ~ItemFramer() = default;
  virtual ItemFrame Frame(const proto::PlanItem& item) const = 0;
  virtual void Placed(const proto::SavePlan& plan) = 0;
};

// Writers of formats that store a blob as something else (DCP: a torch.save'd Python object).
class BytesEncoder {
 public:
  virtual ~BytesEncoder() = default;
  virtual std::string EncodeBytes(const std::string& blob) const = 0;
};

// Readers whose data files may sit as they are in local files (for readers that bypass
// FileSource, e.g. GPUDirect Storage).
class LocalFiles {
 public:
  virtual ~LocalFiles() = default;
  // The path of data file `name` when its bytes sit as they are in a local file; "" otherwise.
  virtual std::string LocalPath(const std::string& name) const = 0;
};

// Readers of formats whose data files carry checksums of their own, outside the metadata
// (PyTorch DCP: the CRC-32 torch.save records for each archive entry). They check them while
// whole items are read through Open() unless this turns it off (load and convert pass their
// verify_checksums). Default: on.
class OwnChecksums {
 public:
  virtual ~OwnChecksums() = default;
  virtual void VerifyOwnChecksums(bool on) = 0;
};

// Writers of formats whose metadata keeps no per-chunk checksums (PyTorch DCP records none:
// torch.save's CRC-32 of each archive entry, which the writer computes itself as the bytes
// pass, stands in). The engine then skips the XXH3 of what it writes there; the checksum
// fields of the metadata it commits are 0.
class NoChunkChecksums {
 public:
  virtual ~NoChunkChecksums() = default;
};

// `backend` as a Capability, or null when it does not offer it.
template <class Capability, class Backend>
Capability* As(Backend& backend) {
  return dynamic_cast<Capability*>(&backend);
}

// The bytes `writer` stores for `blob`: encoded by a BytesEncoder, else the blob itself.
std::string EncodeBlob(const StorageWriter& writer, const std::string& blob);

// Turns a reader's own checksums (OwnChecksums) on or off; nothing for other readers.
void VerifyOwnChecksums(StorageReader& reader, bool on);

// Whether `writer` keeps the chunk checksums the engine computes (it is no NoChunkChecksums).
bool KeepsChunkChecksums(const StorageWriter& writer);

// The frame `writer` keeps around `item` (an ItemFramer's), else none.
ItemFrame FrameOf(const StorageWriter& writer, const proto::PlanItem& item);

// Where data file `name` of `reader` sits as it is in a local file (LocalFiles), else "".
std::string LocalPathOf(const StorageReader& reader, const std::string& name);

// The folder a reader's path names: the path itself when it is a folder (trailing slashes
// removed), else the folder holding that file ("." for a bare file name). For readers that
// take a folder or one file of it (safetensors, torch.save).
std::string FolderOf(const std::string& path);

class StorageReader {
 public:
  virtual ~StorageReader() = default;
  // The committed metadata bytes; throws dcpp::Error if there is no checkpoint.
  virtual std::string ReadMetadata() = 0;
  virtual std::unique_ptr<FileSource> Open(const std::string& name) = 0;
  virtual std::string Describe() const = 0;
};

}  // namespace dcpp
