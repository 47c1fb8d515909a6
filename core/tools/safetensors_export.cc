// Plans the shards from the metadata alone (refusing dtypes safetensors lacks before anything
// is written), then writes shard after shard: the header, then each tensor band by band
// straight from BandReader's buffer into the file.
#include "core/tools/safetensors_export.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/engine/band_reader.h"
#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/env.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/safetensors/safetensors.h"

namespace dcpp {
namespace {

namespace fs = std::filesystem;

// Bands are kept to this size when rows allow, so that each is written while still in cache;
// the memory budget stays the ceiling.
constexpr int64_t kBandTarget = int64_t{8} << 20;
constexpr char kTmp[] = ".tmp";
constexpr char kPlannerPrefix[] = "safetensors.";

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

struct Planned {
  const proto::TensorMeta* meta = nullptr;
  std::string st_dtype;
  int64_t elem_size = 0;
  int64_t nbytes = 0;
  uint64_t begin = 0;  // in the shard's data area
};

struct Shard {
  std::string name;
  std::vector<Planned> tensors;  // in data order
  int64_t nbytes = 0;
};

int64_t NumelOf(const proto::TensorMeta& t) {
  int64_t n = 1;
  for (int64_t s : t.shape()) n *= s;
  return n;
}

// The header of `shard` (data offsets filled in), padded with spaces to a multiple of 8.
std::string HeaderOf(Shard& shard, const proto::Metadata& md) {
  std::stable_sort(shard.tensors.begin(), shard.tensors.end(), [](const Planned& a, const Planned& b) {
    return a.elem_size != b.elem_size ? a.elem_size > b.elem_size : a.meta->fqn() < b.meta->fqn();
  });
  nlohmann::ordered_json header;
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  meta["format"] = "pt";
  const std::map<std::string, std::string> pd(md.planner_data().begin(), md.planner_data().end());
  for (const auto& [k, v] : pd) {
    if (k.rfind(kPlannerPrefix, 0) == 0) meta[k.substr(std::strlen(kPlannerPrefix))] = v;
  }
  header["__metadata__"] = std::move(meta);
  uint64_t pos = 0;
  for (Planned& p : shard.tensors) {
    p.begin = pos;
    pos += static_cast<uint64_t>(p.nbytes);
    header[p.meta->fqn()] = {{"dtype", p.st_dtype},
                             {"shape", std::vector<int64_t>(p.meta->shape().begin(), p.meta->shape().end())},
                             {"data_offsets", {p.begin, pos}}};
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text;
}

// What one export writes, and its undoing.
class Export {
 public:
  Export(StorageReader& src, const std::string& dst, const SafetensorsExportOptions& opt)
      : src_(src), dst_(dst), opt_(opt), env_(opt.env != nullptr ? opt.env : Env::Default()), files_(src) {}

  ~Export() {
    sink_.reset();
    // The temporaries still there (after a commit, none; after a partial one, the rest).
    for (const std::string& name : created_) {
      try {
        env_->Remove(dst_ + "/" + name);
      } catch (const std::exception&) {
        // a stale temporary, removed by the next export
      }
    }
    std::error_code ec;
    if (created_dir_ && !committed_ && !partly_committed_) {
      lock_.reset();  // removes the lock file
      fs::remove(dst_, ec);  // only if empty
    }
  }

  SafetensorsExportStats Run() {
    VerifyOwnChecksums(src_, opt_.verify_checksums);  // (DCP: each item's CRC-32)
    const proto::Metadata md = ParseMetadata(src_.ReadMetadata(), src_.Describe());
    RefuseUncheckedNative(src_, md, opt_.verify_checksums, "export");
    std::vector<Shard> shards = Plan(md);

    created_dir_ = !env_->Exists(dst_);
    env_->CreateDirs(dst_);
    lock_ = env_->Lock(dst_ + "/" + kLockName, opt_.wait_for_lock, "export destination " + dst_);
    const std::vector<std::string> existing = SafetensorsFilesIn(env_, dst_);
    DCPP_CHECK(opt_.overwrite || existing.empty(), "destination ", dst_,
               " already holds a safetensors checkpoint (", existing.front(),
               (existing.size() > 1 ? ", ..." : ""), "); pass --overwrite to replace it");

    stats_.checksums_verified = opt_.verify_checksums && HasChecksums(md);
    stats_.total_size = total_;
    nlohmann::json weight_map = nlohmann::json::object();
    for (Shard& shard : shards) {
      WriteShard(shard, md);
      for (const Planned& p : shard.tensors) weight_map[p.meta->fqn()] = shard.name;
      stats_.files.push_back(shard.name);
    }
    const nlohmann::json index = {{"metadata", {{"total_size", total_}}}, {"weight_map", std::move(weight_map)}};
    stats_.index = kSafetensorsIndex;
    const std::string text = index.dump(2) + "\n";
    Create(stats_.index + kTmp)->WriteAt(0, text.data(), text.size());
    sink_->Finish();
    sink_.reset();

    // Commit: every shard, then the index, renamed into place.
    env_->SyncDir(dst_);
    std::vector<std::string> final_names = stats_.files;
    final_names.push_back(stats_.index);
    // Safetensors has no single commit point: each file is replaced atomically, the index
    // last. Once one file is in place, a failure is said as a partial export.
    for (size_t i = 0; i < final_names.size(); ++i) {
      try {
        env_->Rename(dst_ + "/" + final_names[i] + kTmp, dst_ + "/" + final_names[i]);
      } catch (const std::exception& e) {
        if (i == 0) throw;
        partly_committed_ = true;
        throw Error(StrCat("export into ", dst_, " is incomplete: ", i, " of ", final_names.size(),
                           " files are in place, the rest are not (", ErrorMessage(e),
                           "); run the export again"));
      }
    }
    committed_ = true;
    try {
      env_->SyncDir(dst_);
    } catch (const std::exception& e) {
      stats_.warnings.push_back(StrCat("the export into ", dst_, " may not survive a power loss (", ErrorMessage(e),
                                       "); older files were kept"));
      return stats_;
    }
    const std::set<std::string> keep(final_names.begin(), final_names.end());
    for (const std::string& name : existing) {
      if (keep.count(name)) continue;
      try {
        env_->Remove(dst_ + "/" + name);
      } catch (const std::exception& e) {
        stats_.warnings.push_back(StrCat("cannot remove ", name, ", which the new export does not use: ", ErrorMessage(e)));
      }
    }
    return stats_;
  }

 private:
  // Shards in key order, each up to max_shard_bytes (or one tensor larger than that).
  std::vector<Shard> Plan(const proto::Metadata& md) {
    std::map<std::string, const proto::TensorMeta*> by_key;
    for (const auto& t : md.tensors()) {
      DCPP_CHECK(by_key.emplace(t.fqn(), &t).second, "checkpoint ", src_.Describe(), ": key '",
                 t.fqn(), "' is listed twice");
    }
    for (const auto& b : md.bytes()) stats_.skipped_bytes.push_back(b.fqn());
    std::sort(stats_.skipped_bytes.begin(), stats_.skipped_bytes.end());
    std::vector<Shard> shards(1);
    for (const auto& [key, t] : by_key) {
      Planned p;
      p.meta = t;
      p.st_dtype = DtypeToSafetensors(t->dtype());
      DCPP_CHECK(!p.st_dtype.empty(), "key '", key, "' has dtype ", t->dtype(),
                 ", which safetensors cannot hold");
      p.elem_size = ElementSize(DtypeFromName(t->dtype()));
      p.nbytes = NumelOf(*t) * p.elem_size;
      if (!shards.back().tensors.empty() && shards.back().nbytes + p.nbytes > opt_.max_shard_bytes) {
        shards.emplace_back();
      }
      shards.back().tensors.push_back(p);
      shards.back().nbytes += p.nbytes;
      total_ += p.nbytes;
    }
    const int n = static_cast<int>(shards.size());
    for (int i = 0; i < n; ++i) shards[i].name = SafetensorsShardName(i + 1, n);
    stats_.tensors = static_cast<int64_t>(by_key.size());
    return shards;
  }

  FileSink* Create(const std::string& name) {
    const std::string path = dst_ + "/" + name;
    env_->Remove(path);  // a temporary left by a killed export (we hold the lock)
    created_.push_back(name);
    sink_ = env_->NewFile(path);
    return sink_.get();
  }

  void WriteShard(Shard& shard, const proto::Metadata& md) {
    const std::string header = HeaderOf(shard, md);
    FileSink* sink = Create(shard.name + kTmp);
    sink->WriteAt(0, header.data(), header.size());
    stats_.bytes_written += static_cast<int64_t>(header.size());
    for (const Planned& p : shard.tensors) {
      WriteTensor(p, header.size() + p.begin, *sink);
    }
    sink->Finish();
    sink_.reset();
  }

  void WriteTensor(const Planned& p, uint64_t offset, FileSink& sink) {
    const proto::TensorMeta& t = *p.meta;
    BandReader reader(files_, t, stats_.checksums_verified);
    if (reader.rows() == 0 || reader.row_bytes() == 0) return;
    const int64_t per_row = reader.row_bytes() + reader.staging_bytes_per_row();
    DCPP_CHECK(per_row <= opt_.memory_budget, "key '", t.fqn(), "': one row of dimension 0 needs ",
               per_row, " bytes of buffers, more than the memory budget (", opt_.memory_budget,
               " bytes); raise the memory budget");
    const int64_t band_rows =
        std::min(reader.rows(), std::max<int64_t>(1, std::min(opt_.memory_budget, kBandTarget) / per_row));
    const int64_t need = band_rows * per_row;
    if (need > static_cast<int64_t>(buffer_.size())) {
      buffer_ = std::vector<uint8_t>();  // release before allocating: never two buffers at once
      buffer_.resize(static_cast<size_t>(need));
      stats_.peak_buffer_bytes = std::max(stats_.peak_buffer_bytes, need);
    }
    uint8_t* band = buffer_.data();
    uint8_t* staging = band + band_rows * reader.row_bytes();
    for (int64_t row = 0; row < reader.rows(); row += band_rows) {
      const int64_t end = std::min(reader.rows(), row + band_rows);
      const int64_t n = (end - row) * reader.row_bytes();
      reader.Read(row, end, band, staging);
      sink.WriteAt(offset, band, static_cast<size_t>(n));
      offset += static_cast<uint64_t>(n);
      stats_.bytes_written += n;
      done_ += n;
      if (opt_.progress) opt_.progress(done_, total_);
    }
    stats_.bytes_read += reader.bytes_read();
    if (stats_.checksums_verified) {
      DCPP_CHECK(reader.unverified_chunks() == 0, "key '", t.fqn(), "': some chunks were not verified");
      stats_.chunks_verified += reader.verified_chunks();
    }
  }

  StorageReader& src_;
  const std::string dst_;
  const SafetensorsExportOptions& opt_;
  Env* env_;
  std::unique_ptr<FileLock> lock_;
  SourceFiles files_;
  SafetensorsExportStats stats_;
  std::vector<uint8_t> buffer_;
  std::unique_ptr<FileSink> sink_;
  std::vector<std::string> created_;
  bool created_dir_ = false;
  bool committed_ = false;
  bool partly_committed_ = false;
  int64_t total_ = 0, done_ = 0;
};

}  // namespace

std::string SafetensorsShardName(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index, count);
  return buf;
}

SafetensorsExportStats ExportSafetensors(StorageReader& src, const std::string& dst_dir,
                                         const SafetensorsExportOptions& opt) {
  DCPP_CHECK(opt.max_shard_bytes >= 1, "export: max_shard_bytes must be positive (got ", opt.max_shard_bytes, ")");
  DCPP_CHECK(opt.memory_budget >= 1, "export: the memory budget must be positive (got ", opt.memory_budget, ")");
  std::string dst = dst_dir;
  while (dst.size() > 1 && dst.back() == '/') dst.pop_back();
  Export e(src, dst, opt);
  return e.Run();
}

}  // namespace dcpp
