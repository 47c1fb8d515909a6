// TorchSaveReader: checkpoints written by plain torch.save, read as dcpp checkpoints.
//
// Three layouts (docs/torchsave.md):
//  - one file: `pytorch_model.bin`, `model.pt`, ... given by its path, or the one
//    `*.bin`/`*.pt`/`*.pth` file of a folder;
//  - Hugging Face shards: a folder with `pytorch_model.bin.index.json` (any
//    `*.bin.index.json`, `*.pt.index.json` or `*.pth.index.json`) whose weight_map names the
//    shard files (`pytorch_model-0000K-of-0000N.bin`);
//  - Meta's model-parallel files: a folder of `consolidated.00.pth` ... `consolidated.NN.pth`
//    (and `params.json`), file NN holding model-parallel rank NN's slice of every weight. With
//    more than one file the weights are put together as Meta's Llama reference code split them
//    (core/storage/torchsave/llama_layout.h): each file's slice is one chunk of the tensor, at
//    its offset along the split dimension; a replicated weight is read from file 00. A key
//    outside that layout is refused by name.
//
// Each file is a zip archive holding data.pkl, decoded without running anything (allow-listed
// globals only, torchsave_file.h), and one entry per storage. ReadMetadata() returns native
// metadata (core/format/metadata.h): a tensor per key, one chunk per tensor (per file, for
// consolidated files), pointing at its bytes inside the archive; a value that is not a tensor
// (an epoch number, an optimizer's param_groups) is a bytes entry holding the torch.save
// archive of that value, as DCP stores objects (of consolidated files, file 00's); a tensor stored
// non-contiguously (a transposed view, a slice of a shared storage) is served through a virtual
// file name "<file>#view@<n>" that gathers it (objects: "<file>#object@<n>"). Creator "torch.save", checksum algorithm "none";
// planner_data "torchsave.layout" ("file", "shards" or "llama"), and "torchsave.params" (the
// text of params.json, when there is one). torch.save's CRC-32 of each storage is checked by
// CheckTorchSaveCrcs (verify). Errors are dcpp::Error naming the file and the key.
//
// Thread-safety: as every StorageReader (core/storage/storage.h).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/storage/native/filesystem.h"
#include "core/storage/storage.h"

namespace dcpp {

class TorchSaveReader final : public StorageReader {
 public:
  // `path`: a torch.save file, or a folder as described above. Throws dcpp::Error naming
  // `path` if it is neither.
  explicit TorchSaveReader(const std::string& path);
  ~TorchSaveReader() override;
  std::string ReadMetadata() override;
  std::unique_ptr<FileSource> Open(const std::string& name) override;
  // The folder holding the files (data file names in the metadata are relative to it).
  std::string Describe() const override { return dir_; }

  enum class Layout { kFile, kShards, kLlama };
  Layout layout() const { return layout_; }
  // The torch.save files of the checkpoint (plain names in Describe()), in order.
  const std::vector<std::string>& files() const { return files_; }

  struct Views;  // the non-contiguous tensors, by number

 private:
  std::string dir_;
  Layout layout_ = Layout::kFile;
  std::string index_;  // the index file (kShards)
  std::vector<std::string> files_;
  FileSystemReader folder_;
  std::mutex mu_;
  std::shared_ptr<const Views> views_;  // guarded by mu_ (set by ReadMetadata)
};

// True for a file whose name ends in .bin, .pt or .pth and which starts as a torch.save file
// does, or a folder without `.metadata` holding such files or an index of them.
bool IsTorchSave(const std::string& path);

// What CheckTorchSaveCrcs found: every zip entry of every file (data.pkl and each storage) re-read and its CRC-32 (which
// torch.save records in the zip directory) compared. Problems name the file and the storage.
struct TorchSaveCrcCheck {
  int64_t files = 0;
  int64_t entries = 0;
  int64_t bytes = 0;
  std::vector<std::string> problems;
};
TorchSaveCrcCheck CheckTorchSaveCrcs(const std::string& path);

}  // namespace dcpp
