// DcpWriter: writes DCP's format, framing each tensor chunk in a torch.save archive (the
// frames filled in as each data file is finished, with the CRC-32 of its chunks) and
// committing DCP's .metadata pickle.
#include "core/storage/dcp/dcp.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/storage.h"

namespace dcpp {

namespace {

// A data file being written: forwards every write and accumulates each chunk's CRC-32 while
// its bytes arrive in order; Finish() writes the archive frames around the chunks.
class DcpSink final : public FileSink {
 public:
  DcpSink(std::unique_ptr<FileSink> inner, Env* env, std::string path, std::vector<DcpWriter::Item> items)
      : inner_(std::move(inner)), env_(env), path_(std::move(path)), items_(std::move(items)) {
    std::sort(items_.begin(), items_.end(),
              [](const auto& a, const auto& b) { return a.data_offset < b.data_offset; });
    crc_.resize(items_.size());
  }

  void WriteAt(uint64_t offset, const void* data, size_t length) override {
    inner_->WriteAt(offset, data, length);
    auto it = std::upper_bound(items_.begin(), items_.end(), offset,
                               [](uint64_t off, const DcpWriter::Item& i) { return off < i.data_offset; });
    if (it == items_.begin()) return;
    const size_t k = static_cast<size_t>(it - items_.begin()) - 1;
    const DcpWriter::Item& item = items_[k];
    if (offset >= item.data_offset + item.nbytes) return;
    Crc& c = crc_[k];
    if (c.in_order && offset == item.data_offset + c.length && offset + length <= item.data_offset + item.nbytes) {
      c.value = torch_archive::Crc32(data, length, c.value);
      c.length += length;
    } else {
      c.in_order = false;
    }
  }

  void Finish() override {
    for (size_t k = 0; k < items_.size(); ++k) {
      const DcpWriter::Item& item = items_[k];
      uint32_t crc = crc_[k].value;
      if (!crc_[k].in_order || crc_[k].length != item.nbytes) crc = ReadBackCrc(item);
      const torch_archive::TensorArchive archive(item.dtype, item.sizes, item.nbytes);
      const std::string& prefix = archive.prefix();
      inner_->WriteAt(item.data_offset - prefix.size(), prefix.data(), prefix.size());
      const std::string suffix = archive.suffix(crc);
      inner_->WriteAt(item.data_offset + item.nbytes, suffix.data(), suffix.size());
    }
    inner_->Finish();
  }

 private:
  struct Crc {
    uint32_t value = 0;
    uint64_t length = 0;
    bool in_order = true;
  };

  // The chunk was written out of order: hash it from the file.
  uint32_t ReadBackCrc(const DcpWriter::Item& item) {
    auto src = env_->OpenFile(path_);
    std::vector<char> buf(kIoBlockBytes);
    uint32_t crc = 0;
    uint64_t done = 0;
    while (done < item.nbytes) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), item.nbytes - done));
      src->ReadAt(item.data_offset + done, buf.data(), n);
      crc = torch_archive::Crc32(buf.data(), n, crc);
      done += n;
    }
    return crc;
  }

  std::unique_ptr<FileSink> inner_;
  Env* env_;
  std::string path_;
  std::vector<DcpWriter::Item> items_;
  std::vector<Crc> crc_;
};

}  // namespace

namespace {

// The data files of the checkpoint committed in a folder: a DCP pickle's, or a native one's.
std::optional<std::vector<std::string>> DcpOrNativeFiles(const std::string& bytes) {
  if (!IsDcpMetadata(bytes)) return NativeMetadataFiles(bytes);
  try {
    return DcpFiles(bytes, kMetadataName);
  } catch (const Error&) {
    return std::nullopt;  // unreadable: nothing can be told apart from debris
  }
}

}  // namespace

DcpWriter::DcpWriter(std::string dir, Env* env, DcpWriteOptions options)
    : dir_(std::move(dir)), env_(env), options_(options), files_(dir_, env, DcpOrNativeFiles) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

ItemFrame DcpWriter::Frame(const proto::PlanItem& item) const {
  if (item.is_bytes()) return {};
  const torch_archive::TensorArchive a(item.dtype(), {item.sizes().begin(), item.sizes().end()}, item.nbytes());
  return {a.prefix().size(), a.suffix_size()};
}

void DcpWriter::Placed(const proto::SavePlan& plan) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const proto::PlanItem& it : plan.items()) {
    if (it.is_bytes()) continue;
    placed_[it.file()].push_back({it.dtype(), {it.sizes().begin(), it.sizes().end()}, it.file_offset(), it.nbytes()});
  }
}

std::unique_ptr<FileSink> DcpWriter::Open(const std::string& name) {
  std::vector<Item> items;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = placed_.find(name);
    if (it != placed_.end()) items = it->second;
  }
  return std::make_unique<DcpSink>(files_.Open(name), env_, dir_ + "/" + name, std::move(items));
}

std::string DcpWriter::EncodeBytes(const std::string& blob) const {
  // A torch.save'd object (e.g. a blob read from a DCP checkpoint) is kept as it is, even one
  // dcpp cannot decode; any other blob becomes a Python bytes object.
  if (torch_archive::IsTorchSaveArchive(blob)) return blob;
  return torch_archive::EncodeObject(*pickle::Value::Bytes(blob));
}

CommitReport DcpWriter::Commit(const std::string& metadata, const std::vector<std::string>& keep) {
  const proto::Metadata md = ParseMetadata(metadata, dir_);
  if (!options_.zstd) return files_.Commit(WriteDcpMetadata(md, dir_), keep);
  const DcpItemPlaces places = CompressDcpItems(md, dir_, env_, options_.zstd_level, options_.threads);
  return files_.Commit(WriteDcpMetadata(md, dir_, &places), keep);
}

}  // namespace dcpp
