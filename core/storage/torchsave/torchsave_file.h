// One file written by torch.save (PyTorch >= 1.6, the zip format): which tensors it holds,
// under which keys, and where each one's bytes lie in the file. Nothing in the file is
// executed: its data.pkl is decoded by the safe pickle subset (core/storage/dcp/pickle.h)
// with an allow-list of the globals a state dict needs (the tensor rebuild functions,
// collections.OrderedDict, torch dtypes and storage classes, and for plain values
// _codecs.encode (bytes), set, frozenset, bytearray, torch.Size, torch.device:
// torch_archive's ObjectGlobal); any other global (os.system, a model class, a TorchScript
// `__torch__` type...) is refused naming it.
//
// The object saved must be a dict (or OrderedDict), its tree flattened as dcp.save flattens a
// state dict: a nested dict's keys, and the indices of a list or tuple that holds tensors, are
// joined with '.' ({"model": {"w": t}} gives "model.w", {"state": {0: {"m": t}}} "state.0.m").
// Every other value (a number, text, a list of numbers, an optimizer's param_groups entry)
// is an object, kept as the torch.save archive of that plain value (torch_archive::
// EncodeObject: what DCP stores for a bytes item). Tensors that share a storage (views, tied
// weights) each come out with their own geometry inside that storage.
//
// Thread-safe (pure functions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/storage.h"

namespace dcpp {
namespace torchsave {

// A tensor of a torch.save file.
struct SavedTensor {
  std::string fqn;
  std::string dtype;  // dcpp dtype name (core/model/dtype.h)
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;        // in elements
  int64_t storage_offset = 0;          // in elements
  std::string storage;                 // the storage's key in the archive (data/<key>)
  uint64_t storage_file_offset = 0;    // absolute offset of the storage's first byte
  uint64_t storage_bytes = 0;
  uint32_t storage_crc32 = 0;          // the zip entry's CRC-32 of the whole storage
  int64_t element_size = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return static_cast<uint64_t>(numel() * element_size); }
  // True when the tensor's bytes are nbytes() row-major bytes at data_offset().
  bool contiguous() const;
  uint64_t data_offset() const {
    return storage_file_offset + static_cast<uint64_t>(storage_offset * element_size);
  }
};

// A value of a torch.save file that is not a tensor.
struct SavedObject {
  std::string fqn;
  std::string archive;  // a torch.save archive of the value (torch.load reads it)
};

struct SavedFile {
  std::vector<SavedTensor> tensors;  // in the order the file lists them
  std::vector<SavedObject> objects;
};

// The tensors and objects of the torch.save file `src`. `where` (the file's path) starts every
// error: not a zip (a legacy pre-1.6 torch.save file is refused saying so), truncated, no
// data.pkl, a refused global, a value that is neither a tensor nor a plain value (naming its
// key), a tensor reaching past its storage, a key given twice.
SavedFile ReadTorchSaveFile(FileSource& src, const std::string& where);

// True when `head` (the first bytes of a file, at least 16) starts a torch.save file: a zip
// archive's local header, or the pickled magic number of the legacy format.
bool LooksLikeTorchSave(const std::string& head);

// The row-major bytes of `t`, read from `src` (its storage, gathered by its strides).
std::string GatherTensor(FileSource& src, const SavedTensor& t, const std::string& where);

}  // namespace torchsave
}  // namespace dcpp
