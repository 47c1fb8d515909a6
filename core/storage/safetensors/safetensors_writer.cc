#include "core/storage/safetensors/safetensors_writer.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/format/file_names.h"
#include "core/storage/safetensors/safetensors.h"

namespace dcpp {
namespace {

namespace fs = std::filesystem;

constexpr char kTmp[] = ".tmp";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Files of a safetensors checkpoint in `dir`: shards and index files.
std::vector<std::string> SafetensorsFilesIn(Env* env, const std::string& dir) {
  std::vector<std::string> out;
  for (const std::string& name : env->List(dir)) {
    if (EndsWith(name, ".safetensors") || EndsWith(name, ".safetensors.index.json")) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The header of a shard holding `tensors` (sorted, data offsets filled in), padded with
// spaces to a multiple of 8.
std::string HeaderOf(std::vector<SafetensorsEntry>& tensors, const std::map<std::string, std::string>& metadata) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.element_size != b.element_size ? a.element_size > b.element_size : a.name < b.name;
  });
  nlohmann::ordered_json header;
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = std::move(meta);
  uint64_t pos = 0;
  for (SafetensorsEntry& t : tensors) {
    t.begin = pos;
    pos += static_cast<uint64_t>(t.nbytes);
    t.end = pos;
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace

std::string SafetensorsShardName(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index, count);
  return buf;
}

SafetensorsWriter::SafetensorsWriter(std::string dir, Env* env) : dir_(std::move(dir)), env_(env) {}

SafetensorsWriter::~SafetensorsWriter() {
  sink_.reset();
  // The temporaries still there (after a commit, none; after a partial one, the rest).
  for (const std::string& name : created_) {
    try {
      env_->Remove(dir_ + "/" + name);
    } catch (const std::exception&) {
      // a stale temporary, removed by the next writer
    }
  }
  std::error_code ec;
  if (created_dir_ && !committed_ && !partly_committed_) {
    lock_.reset();  // removes the lock file
    fs::remove(dir_, ec);  // only if empty
  }
}

void SafetensorsWriter::Begin(bool wait_for_lock, const std::string& what) {
  created_dir_ = !env_->Exists(dir_);
  env_->CreateDirs(dir_);
  lock_ = env_->Lock(dir_ + "/" + kLockName, wait_for_lock, what);
  existing_ = SafetensorsFilesIn(env_, dir_);
}

FileSink* SafetensorsWriter::Create(const std::string& name) {
  const std::string path = dir_ + "/" + name;
  env_->Remove(path);  // a temporary left by a killed writer (we hold the lock)
  created_.push_back(name);
  sink_ = env_->NewFile(path);
  return sink_.get();
}

uint64_t SafetensorsWriter::BeginShard(const std::string& name, std::vector<SafetensorsEntry>& tensors,
                                       const std::map<std::string, std::string>& metadata) {
  const std::string header = HeaderOf(tensors, metadata);
  Create(name + kTmp)->WriteAt(0, header.data(), header.size());
  shards_.push_back(name);
  for (const SafetensorsEntry& t : tensors) {
    weight_map_[t.name] = name;
    total_size_ += t.nbytes;
  }
  return header.size();
}

void SafetensorsWriter::Write(uint64_t offset, const void* data, size_t size) { sink_->WriteAt(offset, data, size); }

void SafetensorsWriter::EndShard() {
  sink_->Finish();
  sink_.reset();
}

CommitReport SafetensorsWriter::Commit(const CommitMessages& messages) {
  const nlohmann::json index = {{"metadata", {{"total_size", total_size_}}},
                                 {"weight_map", nlohmann::json(weight_map_)}};
  const std::string text = index.dump(2) + "\n";
  Create(std::string(kSafetensorsIndex) + kTmp)->WriteAt(0, text.data(), text.size());
  sink_->Finish();
  sink_.reset();

  CommitPlan plan;
  plan.dir = dir_;
  for (const std::string& name : shards_) plan.renames.push_back({name + kTmp, name});
  plan.renames.push_back({std::string(kSafetensorsIndex) + kTmp, kSafetensorsIndex});
  // Listed under the lock at Begin(): nothing else has written here since.
  plan.own_files = [this] { return existing_; };
  plan.messages = messages;
  try {
    CommitReport report = CommitFiles(env_, plan);
    committed_ = true;
    return report;
  } catch (const PartialCommitError&) {
    partly_committed_ = true;
    throw;
  }
}

}  // namespace dcpp
