#include "core/storage/native/filesystem.h"

#include <filesystem>
#include <set>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/storage/commit.h"
#include "core/storage/registry.h"

namespace dcpp {
namespace {

// "__<rank>_<n>.distcp" -> n, or -1.
long DataFileNumber(const std::string& name) {
  long rank = 0, n = -1;
  return ParseDataFileName(name, &rank, &n) ? n : -1;
}

}  // namespace

std::optional<std::vector<std::string>> NativeMetadataFiles(const std::string& bytes) {
  proto::Metadata md;
  try {
    md = ParseMetadata(bytes, "");
  } catch (const Error&) {
    return std::nullopt;
  }
  std::set<std::string> seen;
  for (const auto& t : md.tensors()) {
    for (const auto& c : t.chunks()) seen.insert(c.file());
  }
  for (const auto& b : md.bytes()) seen.insert(b.file());
  return std::vector<std::string>(seen.begin(), seen.end());
}

// ---- writer ----

FileSystemWriter::FileSystemWriter(std::string dir, Env* env) : FileSystemWriter(std::move(dir), env, NativeMetadataFiles) {}

FileSystemWriter::FileSystemWriter(std::string dir, Env* env, CommittedFilesFn committed_files)
    : dir_(std::move(dir)), env_(env), committed_files_(std::move(committed_files)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

std::optional<std::vector<std::string>> FileSystemWriter::ReadCommittedFiles() {
  const std::string path = dir_ + "/" + kMetadataName;
  if (!env_->Exists(path)) return std::vector<std::string>{};
  try {
    return committed_files_(ReadWholeFile(env_, path));
  } catch (const Error&) {
    return std::nullopt;
  }
}

void FileSystemWriter::Begin(bool wait_for_lock) {
  env_->CreateDirs(dir_);
  lock_ = env_->Lock(dir_ + "/" + kLockName, wait_for_lock, "checkpoint folder " + dir_);
  // Under the lock no other writer is at work here: whatever data file the committed
  // checkpoint does not name is debris of a failed or killed save. If the committed metadata
  // cannot be read, nothing can be told apart, so nothing is removed.
  env_->Remove(dir_ + "/" + kMetadataTmpName);
  const std::optional<std::vector<std::string>> committed = ReadCommittedFiles();
  if (!committed) return;
  const std::set<std::string> live(committed->begin(), committed->end());
  for (const std::string& name : env_->List(dir_)) {
    if ((IsDataFileName(name) && !live.count(name)) || IsDataFileTempName(name)) env_->Remove(dir_ + "/" + name);
  }
}

void FileSystemWriter::End() { lock_.reset(); }

int FileSystemWriter::FirstFreeFileIndex() {
  long max_n = -1;
  for (const std::string& name : env_->List(dir_)) max_n = std::max(max_n, DataFileNumber(name));
  return static_cast<int>(max_n + 1);
}

bool FileSystemWriter::HasCommitted() { return env_->Exists(dir_ + "/" + kMetadataName); }

std::vector<std::string> FileSystemWriter::CommittedFiles() {
  return ReadCommittedFiles().value_or(std::vector<std::string>{});
}

std::unique_ptr<FileSink> FileSystemWriter::Open(const std::string& name) {
  DCPP_CHECK(IsDataFileName(name), "refusing to create '", name, "' in ", dir_,
             ": not a data file name (__<rank>_<n>.distcp)");
  return env_->NewFile(dir_ + "/" + name);
}

CommitReport FileSystemWriter::Commit(const std::string& metadata, const std::vector<std::string>& keep) {
  const std::string tmp = dir_ + "/" + kMetadataTmpName;
  const auto not_committed = [this](const std::string& cause) {
    return StrCat("cannot commit ", dir_, "/", kMetadataName, " (the previous checkpoint is intact): ", cause);
  };
  const auto remove_tmp = [&] {
    try {
      env_->Remove(tmp);
    } catch (const std::exception&) {
      // removed by the next save's Begin
    }
  };
  try {
    env_->Remove(tmp);
    auto sink = env_->NewFile(tmp);
    sink->WriteAt(0, metadata.data(), metadata.size());
    sink->Finish();
  } catch (const std::exception& e) {
    remove_tmp();
    throw Error(not_committed(ErrorMessage(e)));
  }
  CommitPlan plan;
  plan.dir = dir_;
  plan.renames = {{kMetadataTmpName, kMetadataName}};
  plan.own_files = [this] {
    std::vector<std::string> data_files;
    for (const std::string& name : env_->List(dir_)) {
      if (IsDataFileName(name)) data_files.push_back(name);
    }
    return data_files;
  };
  plan.keep = keep;
  plan.messages.not_started = not_committed;
  plan.messages.not_durable = [this](const std::string& cause) {
    return StrCat("the commit of ", dir_, " may not survive a power loss (", cause,
                  "); the previous checkpoint's files were kept");
  };
  plan.messages.cannot_list = [this](const std::string& cause) {
    return StrCat("cannot list ", dir_, " to remove older files: ", cause);
  };
  plan.messages.cannot_remove = [](const std::string& name, const std::string& cause) {
    return StrCat("cannot remove ", name, ", a file the new checkpoint does not use: ", cause);
  };
  try {
    return CommitFiles(env_, plan);
  } catch (const std::exception&) {
    remove_tmp();  // one rename: nothing is in place
    throw;
  }
}

void FileSystemWriter::Abort(const std::vector<std::string>& created) {
  for (const std::string& name : created) {
    if (!IsDataFileName(name)) continue;
    try {
      env_->Remove(dir_ + "/" + name);
    } catch (const std::exception&) {
      // debris, removed by the next save's Begin
    }
  }
}

// ---- reader ----

FileSystemReader::FileSystemReader(std::string dir, Env* env) : FileSystemReader(std::move(dir), env, false) {}

FileSystemReader::FileSystemReader(std::string dir, Env* env, bool follow_links)
    : dir_(std::move(dir)), env_(env), follow_links_(follow_links) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

std::string FileSystemReader::ReadMetadata() {
  const std::string path = dir_ + "/" + kMetadataName;
  DCPP_CHECK(env_->Exists(path), "no checkpoint in ", dir_, ": ", path, " is missing");
  return ReadWholeFile(env_, path);
}

std::unique_ptr<FileSource> FileSystemReader::Open(const std::string& name) {
  DCPP_CHECK(IsPlainFileName(name), "checkpoint ", dir_, " names data file '", name,
             "', which is not a plain file name inside the folder");
  try {
    const std::string path = dir_ + "/" + name;
    return follow_links_ ? env_->OpenFileFollowingLinks(path) : env_->OpenFile(path);
  } catch (const Error& e) {
    std::string m = e.what();  // "cannot open PATH: why" -> "cannot open data file PATH: why"
    const std::string prefix = "cannot open ";
    if (m.compare(0, prefix.size(), prefix) == 0) m.insert(prefix.size(), "data file ");
    throw Error(m);
  }
}

void RefuseUncheckedNative(const StorageReader& reader, const proto::Metadata& md, bool verify_checksums,
                           const std::string& step) {
  if (!verify_checksums || HasChecksums(md) || dynamic_cast<const FileSystemReader*>(&reader) == nullptr) return;
  throw Error(StrCat(step, ": checkpoint ", reader.Describe(), ": its metadata says checksum algorithm '",
                     md.checksum_algorithm(), "', which dcpp never writes: no chunk or blob can be verified "
                     "(the metadata may have been edited); turn checksum verification off "
                     "(verify_checksums = false, --no-verify) to read it unverified"));
}

namespace {

// A folder with a .metadata (DCP's pickled one ranks first: its format claims those).
const FormatRegistration kNativeFormat({
    Format::kNative.name(), /*rank=*/1, kMetadataName,
    [](const std::string& path) {
      std::error_code ec;
      return std::filesystem::is_directory(path, ec) && std::filesystem::exists(path + "/" + kMetadataName, ec);
    },
    [](const std::string& path) -> std::unique_ptr<StorageReader> { return std::make_unique<FileSystemReader>(path); },
    [](const std::string& path) -> std::unique_ptr<StorageWriter> { return std::make_unique<FileSystemWriter>(path); },
    ""});

}  // namespace

}  // namespace dcpp
