// Finds the files of a torch.save checkpoint, reads each one's tensors (torchsave_file.h) and
// describes them as native metadata; serves non-contiguous tensors through virtual files.
#include "core/storage/torchsave/torchsave.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/format/metadata.pb.h"
#include "core/storage/registry.h"
#include "core/storage/torchsave/llama_layout.h"
#include "core/storage/torchsave/torchsave_file.h"

namespace dcpp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using torchsave::SavedTensor;

constexpr char kView[] = "#view@";
constexpr char kObject[] = "#object@";
constexpr char kParams[] = "params.json";
constexpr char kConsolidated[] = "consolidated.";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool HasTorchSaveSuffix(const std::string& name) {
  return EndsWith(name, ".bin") || EndsWith(name, ".pt") || EndsWith(name, ".pth");
}

bool IsIndexName(const std::string& name) {
  return EndsWith(name, ".bin.index.json") || EndsWith(name, ".pt.index.json") || EndsWith(name, ".pth.index.json");
}

// "consolidated.NN.pth": NN, else -1.
int ConsolidatedRank(const std::string& name) {
  const size_t p = std::strlen(kConsolidated);
  if (name.compare(0, p, kConsolidated) != 0 || !EndsWith(name, ".pth")) return -1;
  const std::string digits = name.substr(p, name.size() - p - 4);
  int n = -1;
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  return !digits.empty() && r.ec == std::errc() && r.ptr == digits.data() + digits.size() ? n : -1;
}

std::vector<std::string> ListFiles(const std::string& dir, bool (*want)(const std::string&)) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code type_ec;
    if (want(name) && e.is_regular_file(type_ec)) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadText(FileSystemReader& folder, const std::string& name) {
  std::unique_ptr<FileSource> src = folder.Open(name);
  std::string text(static_cast<size_t>(src->Size()), '\0');
  if (!text.empty()) src->ReadAt(0, text.data(), text.size());
  return text;
}

// The weight_map of an index: key -> file.
std::map<std::string, std::string> ReadIndex(FileSystemReader& folder, const std::string& index,
                                             const std::string& path) {
  const json doc = json::parse(ReadText(folder, index), nullptr, /*allow_exceptions=*/false);
  DCPP_CHECK(!doc.is_discarded(), "torch.save index ", path, " is not valid JSON");
  DCPP_CHECK(doc.is_object() && doc.contains("weight_map") && doc["weight_map"].is_object(),
             "torch.save index ", path, " has no weight_map object");
  std::map<std::string, std::string> map;
  for (const auto& [name, file] : doc["weight_map"].items()) {
    DCPP_CHECK(file.is_string() && IsPlainFileName(file.get<std::string>()), "torch.save index ", path,
               ": key '", name, "' maps to ", file.dump(), ", not a plain file name in the folder");
    map[name] = file.get<std::string>();
  }
  return map;
}

std::string ShapeString(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// A gathered view's bytes.
class MemoryFile final : public FileSource {
 public:
  explicit MemoryFile(std::string bytes) : bytes_(std::move(bytes)) {}
  void ReadAt(uint64_t offset, void* data, size_t length) override {
    DCPP_CHECK(offset <= bytes_.size() && length <= bytes_.size() - offset, "read of ", length, " bytes at ",
               offset, " past the end of a ", bytes_.size(), "-byte torch.save view");
    if (length > 0) std::memcpy(data, bytes_.data() + offset, length);
  }
  uint64_t Size() override { return bytes_.size(); }

 private:
  std::string bytes_;
};

void AddChunk(proto::TensorMeta& t, const SavedTensor& s, const std::string& file, std::vector<int64_t> offsets,
              std::vector<std::pair<std::string, SavedTensor>>& views) {
  proto::ChunkMeta* c = t.add_chunks();
  for (size_t d = 0; d < s.sizes.size(); ++d) {
    c->add_offsets(offsets.empty() ? 0 : offsets[d]);
    c->add_sizes(s.sizes[d]);
  }
  c->set_length(s.nbytes());
  if (s.contiguous()) {
    c->set_file(file);
    c->set_offset(s.data_offset());
  } else {
    c->set_file(StrCat(file, kView, views.size()));
    c->set_offset(0);
    views.emplace_back(file, s);
  }
}

}  // namespace

struct TorchSaveReader::Views {
  std::vector<std::pair<std::string, SavedTensor>> by_number;  // (file, tensor)
  std::vector<std::pair<std::string, std::string>> objects;   // (file, torch.save archive)
};

TorchSaveReader::TorchSaveReader(const std::string& path)
    : dir_(FolderOf(path)), folder_(dir_, Env::Default(), /*follow_links=*/true) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  DCPP_CHECK(fs::exists(st), "no torch.save checkpoint at ", path, ": no such file or folder");
  if (!fs::is_directory(st)) {
    files_ = {fs::path(path).filename().string()};
    return;
  }
  const std::vector<std::string> indexes = ListFiles(dir_, IsIndexName);
  DCPP_CHECK(indexes.size() <= 1, "torch.save checkpoint ", dir_, " has several index files (", indexes[0], ", ",
             indexes[1], "); give the path of one file instead");
  if (!indexes.empty()) {
    layout_ = Layout::kShards;
    index_ = indexes[0];
    std::set<std::string> files;
    for (const auto& [key, file] : ReadIndex(folder_, index_, dir_ + "/" + index_)) files.insert(file);
    files_.assign(files.begin(), files.end());
    return;
  }
  std::vector<std::string> consolidated = ListFiles(dir_, [](const std::string& n) { return ConsolidatedRank(n) >= 0; });
  if (!consolidated.empty()) {
    layout_ = Layout::kLlama;
    std::sort(consolidated.begin(), consolidated.end(),
              [](const std::string& a, const std::string& b) { return ConsolidatedRank(a) < ConsolidatedRank(b); });
    for (size_t i = 0; i < consolidated.size(); ++i) {
      DCPP_CHECK(ConsolidatedRank(consolidated[i]) == static_cast<int>(i), "torch.save checkpoint ", dir_,
                 ": the consolidated files must be numbered 00 to ", consolidated.size() - 1, ", but rank ", i,
                 "'s file is missing (found ", consolidated[i], ")");
    }
    files_ = consolidated;
    return;
  }
  files_ = ListFiles(dir_, HasTorchSaveSuffix);
  DCPP_CHECK(!files_.empty(), "no torch.save checkpoint in ", dir_,
             ": no *.bin.index.json, consolidated.NN.pth, *.bin, *.pt or *.pth files");
  DCPP_CHECK(files_.size() == 1, "torch.save checkpoint ", dir_, " holds several files (", files_[0], ", ",
             files_[1], ", ...) and no *.bin.index.json that lists them; give the path of one file instead");
}

TorchSaveReader::~TorchSaveReader() = default;

std::string TorchSaveReader::ReadMetadata() {
  proto::Metadata md;
  md.set_format_major(kFormatMajor);
  md.set_format_minor(kFormatMinor);
  md.set_creator("torch.save");
  md.set_world_size(layout_ == Layout::kLlama ? static_cast<int>(files_.size()) : 1);
  md.set_checksum_algorithm(kNoChecksum);
  const char* layout_name = layout_ == Layout::kFile ? "file" : layout_ == Layout::kShards ? "shards" : "llama";
  (*md.mutable_planner_data())["torchsave.layout"] = layout_name;
  std::error_code ec;
  int64_t model_dim = 0;
  if (layout_ == Layout::kLlama && fs::exists(dir_ + "/" + kParams, ec)) {
    const std::string text = ReadText(folder_, kParams);
    const json params = json::parse(text, nullptr, /*allow_exceptions=*/false);
    DCPP_CHECK(params.is_object(), "torch.save checkpoint ", dir_, ": ", kParams, " is not a JSON object");
    if (params.contains("dim") && params["dim"].is_number_integer()) model_dim = params["dim"].get<int64_t>();
    (*md.mutable_planner_data())["torchsave.params"] = text;
  }
  std::map<std::string, std::string> weight_map;
  if (layout_ == Layout::kShards) weight_map = ReadIndex(folder_, index_, dir_ + "/" + index_);

  auto views = std::make_shared<Views>();
  std::map<std::string, proto::TensorMeta> tensors;
  std::map<std::string, std::string> file_of;  // key -> file (for messages)
  // kLlama: every file's tensors by key, in file order.
  std::map<std::string, std::vector<SavedTensor>> slices;
  for (const std::string& file : files_) {
    const std::string path = dir_ + "/" + file;
    DCPP_CHECK(layout_ != Layout::kShards || fs::exists(path, ec), "torch.save index ", dir_, "/", index_,
               " names file ", file, ", which is missing");
    std::unique_ptr<FileSource> src = folder_.Open(file);
    torchsave::SavedFile saved = torchsave::ReadTorchSaveFile(*src, path);
    // Objects (not tensors): each a bytes entry; of consolidated files, file 00's.
    for (torchsave::SavedObject& o : saved.objects) {
      if (layout_ == Layout::kLlama && file != files_[0]) continue;
      auto [it, fresh] = file_of.try_emplace(o.fqn, file);
      DCPP_CHECK(fresh, "torch.save checkpoint ", dir_, ": key '", o.fqn, "' is in both ", it->second, " and ", file);
      proto::BytesMeta* b = md.add_bytes();
      b->set_fqn(o.fqn);
      b->set_file(StrCat(file, kObject, views->objects.size()));
      b->set_offset(0);
      b->set_length(o.archive.size());
      views->objects.emplace_back(file, std::move(o.archive));
    }
    for (SavedTensor& s : saved.tensors) {
      if (layout_ == Layout::kLlama) {
        slices[s.fqn].push_back(std::move(s));
        continue;
      }
      if (layout_ == Layout::kShards) {
        auto w = weight_map.find(s.fqn);
        DCPP_CHECK(w != weight_map.end(), "torch.save file ", path, " holds key '", s.fqn, "', which ", index_,
                   " does not list");
        DCPP_CHECK(w->second == file, "torch.save file ", path, " holds key '", s.fqn, "', which ", index_,
                   " places in ", w->second);
      }
      auto [it, fresh] = file_of.try_emplace(s.fqn, file);
      DCPP_CHECK(fresh, "torch.save checkpoint ", dir_, ": key '", s.fqn, "' is in both ", it->second, " and ", file);
      proto::TensorMeta& t = tensors[s.fqn];
      t.set_fqn(s.fqn);
      t.set_dtype(s.dtype);
      for (int64_t x : s.sizes) t.add_shape(x);
      AddChunk(t, s, file, {}, views->by_number);
    }
  }
  for (const auto& [key, file] : weight_map) {
    DCPP_CHECK(file_of.count(key), "torch.save index ", dir_, "/", index_, " lists key '", key, "' in ", file,
               ", but ", dir_, "/", file, " does not hold it");
  }
  const int ranks = static_cast<int>(files_.size());
  for (auto& [key, parts] : slices) {
    const std::string where = StrCat("torch.save checkpoint ", dir_, " (", ranks, " consolidated files)");
    DCPP_CHECK(static_cast<int>(parts.size()) == ranks, where, ": key '", key, "' is in ", parts.size(),
               " of the files, not in every one");
    const SavedTensor& first = parts[0];
    for (int r = 1; r < ranks; ++r) {
      DCPP_CHECK(parts[r].dtype == first.dtype && parts[r].sizes == first.sizes, where, ": key '", key, "' is ",
                 parts[r].dtype, " ", ShapeString(parts[r].sizes), " in ", files_[r], " but ", first.dtype, " ",
                 ShapeString(first.sizes), " in ", files_[0]);
    }
    const int dim = ranks == 1 ? -1 : torchsave::LlamaSplitDim(key, first.sizes, model_dim, ranks, where);
    DCPP_CHECK(dim < static_cast<int>(first.sizes.size()), where, ": key '", key, "' has ", first.sizes.size(),
               " dimensions, but the Llama layout splits it on dim ", dim);
    proto::TensorMeta& t = tensors[key];
    t.set_fqn(key);
    t.set_dtype(first.dtype);
    for (size_t d = 0; d < first.sizes.size(); ++d) {
      t.add_shape(static_cast<int>(d) == dim ? first.sizes[d] * ranks : first.sizes[d]);
    }
    for (int r = 0; r < (dim < 0 ? 1 : ranks); ++r) {
      std::vector<int64_t> offsets(first.sizes.size(), 0);
      if (dim >= 0) offsets[dim] = r * first.sizes[dim];
      AddChunk(t, parts[r], files_[r], offsets, views->by_number);
    }
  }
  for (auto& [key, t] : tensors) *md.add_tensors() = std::move(t);
  {
    std::lock_guard<std::mutex> lock(mu_);
    views_ = std::move(views);
  }
  return SerializeMetadata(md);
}

std::unique_ptr<FileSource> TorchSaveReader::Open(const std::string& name) {
  const size_t object_at = name.find(kObject);
  const bool object = object_at != std::string::npos;
  const size_t at = object ? object_at : name.find(kView);
  const std::string file = name.substr(0, at);
  DCPP_CHECK(std::find(files_.begin(), files_.end(), file) != files_.end(), "torch.save checkpoint ", dir_,
             " has no file '", file, "'");
  std::unique_ptr<FileSource> src = folder_.Open(file);
  if (at == std::string::npos) return src;
  std::shared_ptr<const Views> views;
  {
    std::lock_guard<std::mutex> lock(mu_);
    views = views_;
  }
  if (!views) {
    ReadMetadata();
    std::lock_guard<std::mutex> lock(mu_);
    views = views_;
  }
  size_t n = 0;
  const char* p = name.data() + at + std::strlen(object ? kObject : kView);
  const auto r = std::from_chars(p, name.data() + name.size(), n);
  const bool parsed = r.ec == std::errc() && r.ptr == name.data() + name.size();
  if (object) {
    DCPP_CHECK(parsed && n < views->objects.size() && views->objects[n].first == file, "torch.save checkpoint ",
               dir_, ": bad object name '", name, "'");
    return std::make_unique<MemoryFile>(views->objects[n].second);
  }
  DCPP_CHECK(parsed && n < views->by_number.size() && views->by_number[n].first == file,
             "torch.save checkpoint ", dir_, ": bad view name '", name, "'");
  const SavedTensor& t = views->by_number[n].second;
  return std::make_unique<MemoryFile>(torchsave::GatherTensor(*src, t, StrCat(dir_, "/", file)));
}

bool IsTorchSave(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::is_regular_file(st)) {
    if (!HasTorchSaveSuffix(fs::path(path).filename().string())) return false;
    std::ifstream in(path, std::ios::binary);
    std::string head(16, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    return torchsave::LooksLikeTorchSave(head);
  }
  if (!fs::is_directory(st) || fs::exists(fs::path(path) / ".metadata", ec)) return false;
  return !ListFiles(path, IsIndexName).empty() || !ListFiles(path, HasTorchSaveSuffix).empty();
}

namespace {

// After safetensors: a Hugging Face folder holding both formats is read from its safetensors.
const FormatRegistration kTorchSaveFormat({
    "torchsave", /*rank=*/3, "*.bin/*.pt/*.pth",
    [](const std::string& path) { return IsTorchSave(path); },
    [](const std::string& path) -> std::unique_ptr<StorageReader> { return std::make_unique<TorchSaveReader>(path); },
    nullptr, "torch.save files are a source only; convert them to a checkpoint with //scripts:convert"});

}  // namespace

}  // namespace dcpp
