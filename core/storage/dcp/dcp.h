// PyTorch DCP's own format (torch.distributed.checkpoint.FileSystemWriter/Reader), read and
// written without Python:
//
//   DIR/.metadata          a pickle of DCP's Metadata dataclass: per key its dtype, shape and
//                          chunks (TensorStorageMetadata) or a blob (BytesStorageMetadata),
//                          and per chunk/blob where it lies (_StorageInfo: file, offset, length)
//   DIR/__<rank>_<n>.distcp  the items back to back; each tensor chunk is a whole torch.save
//                          archive of that chunk, each blob a torch.save'd Python object
//
// DcpReader presents such a folder as a dcpp checkpoint: ReadMetadata() returns dcpp's own
// metadata (core/format/metadata.proto) in which every chunk points at the tensor bytes inside
// its archive, so load, convert, inspect, verify and diff read DCP items in place, with no
// copy. A chunk that PyTorch stored non-contiguously (it keeps the saved tensor's strides) is
// served through a virtual file name ("<file>#strided@<offset>+<length>") that reorders it.
// Blobs are the torch.save archives, unchanged (torch_archive::DecodeObject reads them).
// Items compressed by PyTorch's ZStandard extension (transform_descriptors ["stream.zstd/1"])
// are served through a virtual file "<file>#zstd@<offset>+<length>" holding the decompressed
// item (zstd_stream.h); items of serialization_format=SAFETENSORS (each file's tensors one
// safetensors blob) are read in place. docs/dcp.md has the details.
// DCP records no checksums: the metadata says checksum algorithm "none". torch.save's CRC-32
// of each archive entry is checked instead as whole items are read (VerifyOwnChecksums), and
// by CheckDcpArchives (verify) with the archives' zip structure and bytes items' globals.
//
// Accepted .metadata variants: what PyTorch 2.3 and later write (version absent or "1.x",
// TensorProperties from torch.distributed.checkpoint.metadata or the older
// torch.distributed._shard.sharded_tensor.metadata, storage_meta absent, checkpoint_id as a
// pathlib or pathlib._local path, _StorageInfo without transform descriptors or with one
// "stream.zstd/1"; any other transform is refused naming it). Only
// the classes DCP's metadata uses may appear in the pickle; any other global is refused
// naming it, and nothing is executed.
//
// DcpWriter writes that format: the engine leaves room around every chunk for its archive
// header and directory (StorageWriter::Frame), and the sink fills them in (with the CRC-32 of
// the data, accumulated as it is written) when the file is finished. Commit writes DCP's
// .metadata pickle atomically; the folder then loads with torch.distributed.checkpoint.load.
// Blobs that are not already torch.save archives are stored as Python bytes objects.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/format/metadata.pb.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/storage.h"

namespace dcpp {

// True if `metadata` (the bytes of a .metadata file) is a pickle, i.e. DCP's format.
bool IsDcpMetadata(const std::string& metadata);

// The DCP metadata version this dcpp writes, and the major version it reads.
constexpr char kDcpVersion[] = "1.0.0";
// dcpp planner-data key holding DCP's key paths (JSON {fqn: [str or int, ...]}), read from a
// DCP checkpoint and written back by DcpWriter.
constexpr char kDcpPaths[] = "dcp.paths";

// A byte range of a DCP data file whose CRC-32 torch.save recorded: a tensor item's storage
// entry (`archive` false: `crc32` is that entry's), or a whole bytes item (`archive` true:
// each entry of the archive has its own CRC-32, checked when the item is read in one piece).
struct DcpCrcRange {
  std::string file;
  uint64_t offset = 0, length = 0;
  uint32_t crc32 = 0;
  bool archive = false;
  std::string what;  // for messages: "key 'w' chunk [0:4, 0:8] in DIR/F (item at byte N)"
};

// Translates DCP's .metadata into dcpp's, reading each item's archive header through
// `files` (`threads` at once). Errors name `where` and the key or file. With `crcs`, also
// returns where the CRC-32-covered bytes of every item lie.
proto::Metadata ReadDcpMetadata(const std::string& pickle, StorageReader& files,
                                const std::string& where, int threads = 8,
                                std::vector<DcpCrcRange>* crcs = nullptr);

// The data files a DCP .metadata references (for a writer replacing that checkpoint).
std::vector<std::string> DcpFiles(const std::string& pickle, const std::string& where);

// What CheckDcpArchives found: the zip structure of every item checked as PyTorch's reader
// needs it (torch_archive::CheckZipStructure), every zip entry re-read and its CRC-32 (which
// torch.save records) compared, and the pickle of every bytes item searched for globals
// outside the safe list (torch_archive::UnsafeGlobals: dcp.load would run them). Problems
// name the key, the file and the entry or global.
struct DcpArchiveCheck {
  int64_t items = 0;
  int64_t entries = 0;
  int64_t bytes = 0;
  std::vector<std::string> problems;
};
DcpArchiveCheck CheckDcpArchives(const std::string& dir);

// The bytes items of the DCP checkpoint in `dir` whose pickle names a global outside the safe
// list, one line each naming the key, file and globals ("bytes key 'k' in DIR/F (item at byte
// N): its pickle names os.system, ..."); an item that cannot be decoded is named too.
std::vector<std::string> UnsafeDcpObjects(const std::string& dir);

class DcpReader final : public StorageReader, public LocalFiles, public OwnChecksums {
 public:
  explicit DcpReader(std::string dir, Env* env = Env::Default());
  // dcpp metadata (serialized) translated from DIR/.metadata.
  std::string ReadMetadata() override;
  std::unique_ptr<FileSource> Open(const std::string& name) override;
  std::string Describe() const override { return files_.Describe(); }
  // Plain archive items only (strided ones are reordered through a virtual source).
  std::string LocalPath(const std::string& name) const override;
  // On by default: a source opened after ReadMetadata() checks, as each item's CRC-covered
  // bytes are read front to back (in any number of reads; re-reading from the item's first
  // byte starts over), their CRC-32 against the one torch.save recorded, and throws
  // dcpp::Error naming the key, file and item on a mismatch. Items read in part or out of
  // order go unchecked. Bytes items are checked when read whole in one ReadAt.
  void VerifyOwnChecksums(bool on) override;
  // CRC-32 checks that held so far, over every source this reader opened (an item read whole
  // twice counts twice).
  int64_t crc_checked() const { return *checked_; }

  struct CrcIndex;  // the DcpCrcRanges of each file, sorted by offset

 private:
  FileSystemReader files_;
  mutable std::mutex mu_;
  std::shared_ptr<const CrcIndex> crcs_;  // guarded by mu_ (set by ReadMetadata)
  bool verify_ = true;                    // guarded by mu_
  std::shared_ptr<std::atomic<int64_t>> checked_ = std::make_shared<std::atomic<int64_t>>(0);
};

// DcpWriter's options.
struct DcpWriteOptions {
  // Compress every item with zstd as PyTorch's ZStandard extension does (_StorageInfo
  // transform_descriptors ["stream.zstd/1"]; torch.distributed.checkpoint.load reads it with
  // the `zstandard` or `pyzstd` module installed). The coordinator compresses the data files
  // at Commit, one frame per item, each file rewritten through "<file>.zstd.tmp". Default: off.
  bool zstd = false;
  int zstd_level = 3;  // zstd's compression level. Default: 3 (zstd's own default)
  int threads = 4;     // files compressed at once. Default: 4
};

// Where CompressDcpItems put each item: (file, offset before) -> (offset, length) compressed.
using DcpItemPlaces = std::map<std::pair<std::string, uint64_t>, std::pair<uint64_t, uint64_t>>;

// Compresses, in place, every item of the data files in `dir` that `md` (dcpp metadata whose
// chunks DcpWriter framed) references. Errors name the file and item.
DcpItemPlaces CompressDcpItems(const proto::Metadata& md, const std::string& dir, Env* env, int level,
                               int threads);

class DcpWriter final : public StorageWriter, public ItemFramer, public BytesEncoder, public NoChunkChecksums {
 public:
  explicit DcpWriter(std::string dir, Env* env = Env::Default(), DcpWriteOptions options = {});
  void Begin(bool wait_for_lock) override { files_.Begin(wait_for_lock); }
  void End() override { files_.End(); }
  int FirstFreeFileIndex() override { return files_.FirstFreeFileIndex(); }
  bool HasCommitted() override { return files_.HasCommitted(); }
  std::vector<std::string> CommittedFiles() override { return files_.CommittedFiles(); }
  std::unique_ptr<FileSink> Open(const std::string& name) override;
  // `metadata`: dcpp's (serialized); written as DCP's pickle, with the native commit protocol.
  CommitReport Commit(const std::string& metadata, const std::vector<std::string>& keep) override;
  void Abort(const std::vector<std::string>& created) override { files_.Abort(created); }
  std::string Describe() const override { return dir_; }

  ItemFrame Frame(const proto::PlanItem& item) const override;
  void Placed(const proto::SavePlan& plan) override;
  std::string EncodeBytes(const std::string& blob) const override;

  // A tensor chunk placed in a file.
  struct Item {
    std::string dtype;
    std::vector<int64_t> sizes;
    uint64_t data_offset = 0;
    uint64_t nbytes = 0;
  };

 private:
  std::string dir_;
  Env* env_;
  DcpWriteOptions options_;
  FileSystemWriter files_;
  std::mutex mu_;
  std::map<std::string, std::vector<Item>> placed_;  // by file
};

// DCP's .metadata pickle for dcpp metadata whose chunks were written by DcpWriter (tensor
// data framed by torch.save archives; blobs as archives). `checkpoint_id` is recorded. With
// `compressed`, every item is where it says, with transform_descriptors ["stream.zstd/1"].
std::string WriteDcpMetadata(const proto::Metadata& md, const std::string& checkpoint_id,
                             const DcpItemPlaces* compressed = nullptr);

}  // namespace dcpp
