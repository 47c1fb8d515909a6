// Writing torch.save archives: a plain Python object (EncodeObject), and the bytes around one
// tensor's data (TensorArchive), entry for entry as torch.save lays them out.
#include "core/storage/dcp/torch_archive.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/model/dtype.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_pickle_internal.h"
#include "core/storage/dcp/zip_internal.h"

namespace dcpp {
namespace torch_archive {
namespace {

constexpr char kArchiveName[] = "archive";

// The small entries torch.save writes before and after the data. The 40-digit serialization
// id is per archive in torch.save; torch.load only reads it, so any digits do.
const char kFormatVersion[] = "1";
const char kStorageAlignment[] = "64";
const char kByteOrder[] = "little";
const char kVersion[] = "3\n";
const char kSerializationId[] = "0000000000000000000000000000000000000000";

std::string Name(const char* entry) { return std::string(kArchiveName) + "/" + entry; }

// The entries before the storage: data.pkl and torch.save's format notes.
void LeadingEntries(std::string& out, const std::string& pkl, std::vector<ZipRecord>* records) {
  SmallEntry(out, 0, Name("data.pkl"), pkl, records);
  SmallEntry(out, 0, Name(".format_version"), kFormatVersion, records);
  SmallEntry(out, 0, Name(".storage_alignment"), kStorageAlignment, records);
  SmallEntry(out, 0, Name("byteorder"), kByteOrder, records);
}

// The entries after the storage, at archive position `base` + out.size().
void TrailingEntries(std::string& out, uint64_t base, std::vector<ZipRecord>* records) {
  SmallEntry(out, base, Name("version"), kVersion, records);
  SmallEntry(out, base, Name(".data/serialization_id"), kSerializationId, records);
}

}  // namespace

std::string EncodeObject(const pickle::Value& v) {
  pickle::Writer w(3);
  w.Put(v);
  const std::string pkl = w.Finish();
  std::string out;
  std::vector<ZipRecord> records;
  LeadingEntries(out, pkl, &records);
  TrailingEntries(out, 0, &records);
  out += Directory(records, out.size());
  return out;
}

TensorArchive::TensorArchive(const std::string& dtype, const std::vector<int64_t>& sizes, uint64_t nbytes)
    : nbytes_(nbytes) {
  const int64_t es = ElementSize(DtypeFromName(dtype));
  pickle::Writer w(2);
  const char* storage_class = StorageClass(dtype);
  w.Global("torch._utils", storage_class ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
  w.Mark();
  w.Mark().Str("storage");
  if (storage_class) {
    w.Global("torch", storage_class);
  } else {
    w.Global("torch.storage", "UntypedStorage");
  }
  // Typed storages count elements, the untyped one bytes.
  w.Str("0").Str("cpu").Int(static_cast<int64_t>(storage_class ? nbytes / static_cast<uint64_t>(es) : nbytes));
  w.Tuple().BinPersId();
  w.Int(0);
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= std::max<int64_t>(sizes[d], 1);
  }
  w.Mark();
  for (int64_t s : sizes) w.Int(s);
  w.Tuple();
  w.Mark();
  for (int64_t s : strides) w.Int(s);
  w.Tuple();
  w.Bool(false);
  w.Global("collections", "OrderedDict").Tuple(0).Reduce();
  if (!storage_class) w.Global("torch", dtype);
  w.Tuple().Reduce();
  LeadingEntries(prefix_, w.Finish(), &records_);
  records_.push_back({Name("data/0"), prefix_.size(), nbytes, 0});
  LocalHeader(prefix_, prefix_.size(), records_.back().name, nbytes >= kMax32);
  suffix_size_ = suffix(0).size();
}

std::string TensorArchive::suffix(uint32_t data_crc32) const {
  std::vector<ZipRecord> records = records_;
  records.back().crc = data_crc32;
  std::string out;
  Descriptor(out, data_crc32, nbytes_, nbytes_ >= kMax32);
  const uint64_t base = prefix_.size() + nbytes_;
  TrailingEntries(out, base, &records);
  out += Directory(records, base + out.size());
  return out;
}

}  // namespace torch_archive
}  // namespace dcpp
