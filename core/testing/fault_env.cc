#include "core/testing/fault_env.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/base/error.h"

namespace dcpp::testing {
namespace {

class FaultSink final : public FileSink {
 public:
  FaultSink(FaultEnv* env, std::string path, std::unique_ptr<FileSink> inner)
      : env_(env), path_(std::move(path)), inner_(std::move(inner)) {}
  void WriteAt(uint64_t offset, const void* data, size_t length) override {
    const size_t partial = env_->Step("write", path_, length);
    if (partial > 0) {
      inner_->WriteAt(offset, data, partial);
      throw Error(StrCat("write ", path_, " at offset ", offset + partial, ": ", std::strerror(ENOSPC),
                         " (injected short write)"));
    }
    inner_->WriteAt(offset, data, length);
  }
  void Finish() override {
    env_->Step("fsync", path_);
    inner_->Finish();
    env_->Synced(path_);
  }

 private:
  FaultEnv* env_;
  std::string path_;
  std::unique_ptr<FileSink> inner_;
};

class FaultSource final : public FileSource {
 public:
  FaultSource(FaultEnv* env, std::string path, std::unique_ptr<FileSource> inner)
      : env_(env), path_(std::move(path)), inner_(std::move(inner)) {}
  void ReadAt(uint64_t offset, void* data, size_t length) override {
    env_->Step("read", path_);
    inner_->ReadAt(offset, data, length);
  }
  uint64_t Size() override { return inner_->Size(); }

 private:
  FaultEnv* env_;
  std::string path_;
  std::unique_ptr<FileSource> inner_;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

std::pair<std::string, std::string> FaultEnv::Split(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

FaultEnv::Dir* FaultEnv::Find(const std::string& dir) {
  auto it = dirs_.find(dir);
  return it == dirs_.end() ? nullptr : &it->second;
}

void FaultEnv::Track(const std::string& dir) {
  std::lock_guard<std::mutex> lock(mu_);
  Dir& d = dirs_[dir];
  d.live.clear();
  for (const std::string& name : target()->List(dir)) {
    const int64_t node = next_node_++;
    d.live[name] = node;
    durable_content_[node] = Slurp(dir + "/" + name);
  }
  d.durable = d.live;
}

void FaultEnv::Arm(Fault fault, int64_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  fault_ = fault;
  fault_at_ = ops_ + index;
  fired_ = false;
}

int64_t FaultEnv::operations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ops_;
}

bool FaultEnv::fired() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fired_;
}

std::string FaultEnv::fault_path() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fired_path_;
}

size_t FaultEnv::Step(const char* op, const std::string& path, size_t length) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t index = ops_++;
  if (lost_power_) throw Error(StrCat(op, " ", path, ": the machine is off (simulated power loss)"));
  if (fault_ == Fault::kNone || index != fault_at_) return 0;
  fired_ = true;
  fired_path_ = path;
  int err = EIO;
  switch (fault_) {
    case Fault::kPowerLoss:
      lost_power_ = true;
      throw Error(StrCat(op, " ", path, ": simulated power loss"));
    case Fault::kShortWrite:
      if (length > 1) return length / 2;
      err = ENOSPC;
      break;
    case Fault::kEnospc:
      err = ENOSPC;
      break;
    case Fault::kEintr:
      err = EINTR;
      break;
    default:
      break;
  }
  throw Error(StrCat(op, " ", path, ": ", std::strerror(err), " (injected)"));
}

void FaultEnv::Synced(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto [dir, name] = Split(path);
  Dir* d = Find(dir);
  if (d == nullptr || !d->live.count(name)) return;
  durable_content_[d->live[name]] = Slurp(path);
}

std::unique_ptr<FileSink> FaultEnv::NewFile(const std::string& path) {
  Step("create", path);
  auto inner = target()->NewFile(path);
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto [dir, name] = Split(path);
    if (Dir* d = Find(dir)) d->live[name] = next_node_++;
  }
  return std::make_unique<FaultSink>(this, path, std::move(inner));
}

std::unique_ptr<FileSource> FaultEnv::OpenFile(const std::string& path) {
  Step("open", path);
  return std::make_unique<FaultSource>(this, path, target()->OpenFile(path));
}

void FaultEnv::Rename(const std::string& from, const std::string& to) {
  Step("rename", from);
  target()->Rename(from, to);
  std::lock_guard<std::mutex> lock(mu_);
  const auto [dir, name] = Split(from);
  const auto [to_dir, to_name] = Split(to);
  Dir* d = Find(dir);
  Dir* t = Find(to_dir);
  if (d == nullptr || t == nullptr) return;
  auto it = d->live.find(name);
  if (it == d->live.end()) return;
  const int64_t node = it->second;
  d->live.erase(it);
  t->live[to_name] = node;
}

void FaultEnv::Remove(const std::string& path) {
  Step("remove", path);
  target()->Remove(path);
  std::lock_guard<std::mutex> lock(mu_);
  const auto [dir, name] = Split(path);
  if (Dir* d = Find(dir)) d->live.erase(name);
}

void FaultEnv::SyncDir(const std::string& dir) {
  Step("fsync folder", dir);
  target()->SyncDir(dir);
  std::lock_guard<std::mutex> lock(mu_);
  if (Dir* d = Find(dir)) d->durable = d->live;
}

std::vector<std::string> FaultEnv::List(const std::string& dir) {
  Step("list", dir);
  return target()->List(dir);
}

bool FaultEnv::Exists(const std::string& path) {
  Step("stat", path);
  return target()->Exists(path);
}

void FaultEnv::CreateDirs(const std::string& dir) {
  Step("mkdir", dir);
  target()->CreateDirs(dir);
}

std::unique_ptr<FileLock> FaultEnv::Lock(const std::string& path, bool wait, const std::string& what) {
  Step("lock", path);
  // The lock file itself holds nothing: it is not tracked.
  return target()->Lock(path, wait, what);
}

void FaultEnv::DropUnsynced() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [dir, d] : dirs_) {
    for (const std::string& name : target()->List(dir)) target()->Remove(dir + "/" + name);
    for (const auto& [name, node] : d.durable) {
      auto content = durable_content_.find(node);
      std::ofstream out(dir + "/" + name, std::ios::binary);
      if (content != durable_content_.end()) out << content->second;
    }
    d.live = d.durable;
  }
  lost_power_ = false;
  fault_ = Fault::kNone;
}

}  // namespace dcpp::testing
