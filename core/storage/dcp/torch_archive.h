// torch.save's file format, as PyTorch DCP stores each item of a `__R_N.distcp` file: a zip
// archive (entries stored, not compressed) holding `<name>/data.pkl` (a pickle) and one entry
// `<name>/data/<key>` per storage. Reading and writing it without Python:
//
//  - ReadTensorItem: where the bytes of the one tensor an archive holds lie in the file, with
//    its dtype, sizes, strides and storage offset (PyTorch keeps the saved tensor's strides,
//    so a transposed chunk is stored transposed).
//  - DecodeObject / EncodeObject: a torch.save'd Python object (DCP's bytes items) as a
//    pickle::Value, with only plain values allowed (numbers, strings, bytes, lists, tuples,
//    dicts, sets, tensors); anything else is refused naming the global.
//  - TensorArchive: the bytes that go before and after a tensor's data to make an archive
//    torch.load reads, so the data itself is written straight from the tensor.
//
// All offsets in the archive are relative to its first byte, as torch.save writes them.
// Thread-safe (pure functions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/dcp/pickle.h"
#include "core/storage/storage.h"

namespace dcpp {
namespace torch_archive {

// One entry of an archive; `data_offset` is absolute in the file read.
struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

// The entries of the zip archive at bytes [offset, offset + length) of `src`. Throws
// dcpp::Error naming `where` if it is not a zip archive, is truncated, or has a compressed
// entry.
std::vector<ZipEntry> ReadZipDirectory(FileSource& src, uint64_t offset, uint64_t length,
                                       const std::string& where);

// The tensor a DCP tensor item holds.
struct StoredTensor {
  std::string dtype;  // dcpp dtype name (core/model/dtype.h)
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // in elements
  int64_t storage_offset = 0;    // in elements
  uint64_t storage_file_offset = 0;  // absolute offset of the storage's first byte
  uint64_t storage_bytes = 0;
  uint32_t storage_crc32 = 0;        // the zip entry's CRC-32 of the whole storage
  // True when the tensor's bytes are the `numel * element size` bytes at data_offset(),
  // row-major.
  bool contiguous() const;
  uint64_t data_offset() const;
  int64_t element_size() const;
};

// Reads the tensor that torch.save wrote into the archive at [offset, offset + length).
// Checks that its strides and storage offset stay inside the storage. Errors name `where`.
StoredTensor ReadTensorItem(FileSource& src, uint64_t offset, uint64_t length,
                            const std::string& where);

// Checks the CRC-32 of every entry of the archive held in memory at [data, data + length).
// Throws dcpp::Error naming `where` and the entry on a mismatch (or a malformed archive).
void CheckEntryCrcs(const void* data, size_t length, const std::string& where);

// Everything about the zip structure of the archive at [offset, offset + length) of `src`
// that PyTorch's reader (miniz, in torch.load) relies on and the CRC-32s do not cover, as
// one problem per line: the end record (at the very end, no comment, one disk, its entry
// counts equal, its directory size and offset exactly those of the central directory that
// ends where the end records begin), the zip64 end record and locator when present (agreeing
// with the end record), every central directory entry (stored, not encrypted, disk 0, a
// local header with the same name, method and, unless sizes follow in a data descriptor,
// sizes and CRC-32; data inside the archive, before the directory, entries not overlapping),
// and torch.save's layout (every entry under one top folder, a data.pkl and a version
// record). Empty when the structure is sound. `where` prefixes every problem.
std::vector<std::string> CheckZipStructure(FileSource& src, uint64_t offset, uint64_t length,
                                           const std::string& where);

// The globals the pickle of a torch.save archive (in memory) names that are outside the
// safe list (what torch.load(weights_only=True) allows a state dict: tensors and their
// storages and dtypes, OrderedDict, torch.Size, torch.device, set, frozenset, bytearray,
// complex, _codecs.encode...), as "module.name", in order of appearance, each once. Nothing
// is executed: the pickle is only decoded. PyTorch's dcp.load (weights_only=False) would
// import and call them. Throws dcpp::Error naming `where` if the archive or its pickle
// cannot be decoded (then it cannot be shown safe either).
std::vector<std::string> UnsafeGlobals(const std::string& archive, const std::string& where);

// True if `data` is a whole torch.save archive (a zip with a data.pkl), whatever it holds.
bool IsTorchSaveArchive(const std::string& data);

// Decodes the Python object torch.save wrote into `archive` (in memory). Plain values come
// back as themselves (an OrderedDict as a kDict, _codecs.encode(...) as kBytes, torch.Size
// as a kTuple); a tensor comes back as a kObject of class torch.Tensor whose state is a dict
// {'dtype': str, 'shape': tuple, 'data': bytes (row-major)}. Throws dcpp::Error naming the
// global for anything else: the caller keeps such an item as opaque bytes.
pickle::ValuePtr DecodeObject(const std::string& archive, const std::string& where);

// A torch.save archive of a plain value (no tensors): what torch.save(obj) would write,
// loadable by torch.load.
std::string EncodeObject(const pickle::Value& v);

// An entry of an archive being written: where its local header is, and its size and CRC-32.
struct ZipRecord {
  std::string name;
  uint64_t local_offset = 0;
  uint64_t size = 0;
  uint32_t crc = 0;
};

// The archive around one tensor's row-major data: prefix() + data + suffix(crc32 of data) is
// what torch.save(tensor) writes for a contiguous tensor of that dtype and shape.
class TensorArchive {
 public:
  TensorArchive(const std::string& dtype, const std::vector<int64_t>& sizes, uint64_t nbytes);
  const std::string& prefix() const { return prefix_; }
  size_t suffix_size() const { return suffix_size_; }
  std::string suffix(uint32_t data_crc32) const;

 private:
  std::string prefix_;
  uint64_t nbytes_;
  std::vector<ZipRecord> records_;  // the prefix's entries, then the data's (CRC filled by suffix)
  size_t suffix_size_ = 0;
};

// CRC-32 (zip's) of `data`, and of the concatenation of two pieces.
uint32_t Crc32(const void* data, size_t length, uint32_t crc = 0);
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);

}  // namespace torch_archive
}  // namespace dcpp
