// Plans the shards from the metadata alone (refusing dtypes safetensors lacks before anything
// is written), then feeds SafetensorsWriter shard after shard: the header, then each tensor
// band by band straight from BandReader's buffer into the file.
#include "core/tools/safetensors_export.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "core/base/error.h"
#include "core/engine/band_reader.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/commit.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/safetensors/safetensors.h"
#include "core/storage/safetensors/safetensors_writer.h"
#include "core/tools/dtype_cast.h"

namespace dcpp {
namespace {

// Bands are kept to this size when rows allow, so that each is written while still in cache;
// the memory budget stays the ceiling.
constexpr int64_t kBandTarget = int64_t{8} << 20;
constexpr char kPlannerPrefix[] = "safetensors.";

struct Shard {
  std::string name;
  std::vector<SafetensorsEntry> tensors;
  int64_t nbytes = 0;
};

int64_t NumelOf(const proto::TensorMeta& t) {
  int64_t n = 1;
  for (int64_t s : t.shape()) n *= s;
  return n;
}

// The `__metadata__` pairs of the source: its planner_data "safetensors.<key>" pairs.
std::map<std::string, std::string> SafetensorsMetadataOf(const proto::Metadata& md) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : md.planner_data()) {
    if (k.rfind(kPlannerPrefix, 0) == 0) out[k.substr(std::strlen(kPlannerPrefix))] = v;
  }
  return out;
}

// What one export writes (its undoing is the writer's).
class Export {
 public:
  Export(StorageReader& src, const std::string& dst, const SafetensorsExportOptions& opt)
      : src_(src), dst_(dst), opt_(opt), casts_(DtypeCasts::Parse(opt.dtype_casts)), files_(src), writer_(dst, opt.env != nullptr ? opt.env : Env::Default()) {}

  SafetensorsExportStats Run() {
    VerifyOwnChecksums(src_, opt_.verify_checksums);  // (DCP: each item's CRC-32)
    const proto::Metadata md = ParseMetadata(src_.ReadMetadata(), src_.Describe());
    RefuseUncheckedNative(src_, md, opt_.verify_checksums, "export");
    std::vector<Shard> shards = Plan(md);

    writer_.Begin(opt_.wait_for_lock, "export destination " + dst_);
    const std::vector<std::string>& existing = writer_.existing();
    DCPP_CHECK(opt_.overwrite || existing.empty(), "destination ", dst_,
               " already holds a safetensors checkpoint (", existing.front(),
               (existing.size() > 1 ? ", ..." : ""), "); pass --overwrite to replace it");

    stats_.checksums_verified = opt_.verify_checksums && HasChecksums(md);
    stats_.total_size = total_;
    const std::map<std::string, std::string> metadata = SafetensorsMetadataOf(md);
    for (Shard& shard : shards) {
      const uint64_t data_start = writer_.BeginShard(shard.name, shard.tensors, metadata);
      stats_.bytes_written += static_cast<int64_t>(data_start);
      for (const SafetensorsEntry& t : shard.tensors) WriteTensor(*by_key_.at(t.name), data_start + t.begin);
      writer_.EndShard();
      stats_.files.push_back(shard.name);
    }
    stats_.index = kSafetensorsIndex;
    stats_.warnings = writer_.Commit(CommitWords()).warnings;
    return stats_;
  }

 private:
  // Safetensors has no single commit point: each file is replaced atomically, the index last.
  // Once one file is in place, a failure is said as a partial export.
  CommitMessages CommitWords() const {
    CommitMessages m;
    m.partial = [this](size_t in_place, size_t total, const std::string& cause) {
      return StrCat("export into ", dst_, " is incomplete: ", in_place, " of ", total,
                    " files are in place, the rest are not (", cause, "); run the export again");
    };
    m.not_durable = [this](const std::string& cause) {
      return StrCat("the export into ", dst_, " may not survive a power loss (", cause, "); older files were kept");
    };
    m.cannot_remove = [](const std::string& name, const std::string& cause) {
      return StrCat("cannot remove ", name, ", which the new export does not use: ", cause);
    };
    return m;
  }

  // Shards in key order, each up to max_shard_bytes (or one tensor larger than that).
  std::vector<Shard> Plan(const proto::Metadata& md) {
    for (const auto& t : md.tensors()) {
      DCPP_CHECK(by_key_.emplace(t.fqn(), &t).second, "checkpoint ", src_.Describe(), ": key '",
                 t.fqn(), "' is listed twice");
    }
    for (const auto& b : md.bytes()) stats_.skipped_bytes.push_back(b.fqn());
    std::sort(stats_.skipped_bytes.begin(), stats_.skipped_bytes.end());
    std::vector<Shard> shards(1);
    for (const auto& [key, t] : by_key_) {
      SafetensorsEntry e;
      e.name = key;
      const std::string& dtype = out_dtype_[key] = casts_.Target(key, t->dtype());
      if (dtype != t->dtype()) ++stats_.tensors_cast;
      e.dtype = DtypeToSafetensors(dtype);
      DCPP_CHECK(!e.dtype.empty(), "key '", key, "' has dtype ", dtype,
                 ", which safetensors cannot hold");
      e.shape = SafetensorsShape(dtype, {t->shape().begin(), t->shape().end()}, key);
      e.element_size = ElementSize(DtypeFromName(dtype));
      e.nbytes = NumelOf(*t) * e.element_size;
      if (!shards.back().tensors.empty() && shards.back().nbytes + e.nbytes > opt_.max_shard_bytes) {
        shards.emplace_back();
      }
      shards.back().nbytes += e.nbytes;
      total_ += e.nbytes;
      shards.back().tensors.push_back(std::move(e));
    }
    const int n = static_cast<int>(shards.size());
    for (int i = 0; i < n; ++i) shards[i].name = SafetensorsShardName(i + 1, n);
    stats_.tensors = static_cast<int64_t>(by_key_.size());
    return shards;
  }

  // Streams `t` band by band into the file at `offset`, cast on the way when its exported
  // dtype differs (the cast band then follows the band read in the buffer).
  void WriteTensor(const proto::TensorMeta& t, uint64_t offset) {
    BandReader reader(files_, t, stats_.checksums_verified);
    if (reader.rows() == 0 || reader.row_bytes() == 0) return;
    const CastRows geo(DtypeFromName(t.dtype()), DtypeFromName(out_dtype_.at(t.fqn())), reader.byte_shape());
    const int64_t per_step = geo.unit * (reader.row_bytes() + reader.staging_bytes_per_row()) +
                             (geo.cast ? geo.out_unit * geo.out_row_bytes : 0);
    DCPP_CHECK(per_step <= opt_.memory_budget, "key '", t.fqn(), "': one row of dimension 0 needs ",
               per_step, " bytes of buffers, more than the memory budget (", opt_.memory_budget,
               " bytes); raise the memory budget");
    const int64_t band_rows = std::min(
        reader.rows(), geo.unit * std::max<int64_t>(1, std::min(opt_.memory_budget, kBandTarget) / per_step));
    const int64_t need = band_rows / geo.unit * per_step;
    if (need > static_cast<int64_t>(buffer_.size())) {
      buffer_ = std::vector<uint8_t>();  // release before allocating: never two buffers at once
      buffer_.resize(static_cast<size_t>(need));
      stats_.peak_buffer_bytes = std::max(stats_.peak_buffer_bytes, need);
    }
    uint8_t* band = buffer_.data();
    uint8_t* staging = band + band_rows * reader.row_bytes();
    uint8_t* cast = staging + band_rows * reader.staging_bytes_per_row();
    for (int64_t row = 0; row < reader.rows(); row += band_rows) {
      const int64_t end = std::min(reader.rows(), row + band_rows);
      reader.Read(row, end, band, staging);
      const uint8_t* data = band;
      int64_t n = (end - row) * reader.row_bytes();
      if (geo.cast) {
        CastElements(band, geo.from, cast, geo.to, n / ElementSize(geo.from));
        data = cast;
        n = geo.OutRows(end - row) * geo.out_row_bytes;
      }
      writer_.Write(offset, data, static_cast<size_t>(n));
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
  const DtypeCasts casts_;
  std::map<std::string, std::string> out_dtype_;  // key -> the dtype it is exported in
  SourceFiles files_;
  std::map<std::string, const proto::TensorMeta*> by_key_;
  SafetensorsExportStats stats_;
  std::vector<uint8_t> buffer_;
  int64_t total_ = 0, done_ = 0;
  SafetensorsWriter writer_;
};

}  // namespace

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
