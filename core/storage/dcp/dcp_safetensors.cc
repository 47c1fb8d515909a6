// IsSafetensorsBlob and ReadSafetensorsBlob: the safetensors blobs that DCP's
// serialization_format=SAFETENSORS writes into its data files (see dcp_internal.h).
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/model/dtype.h"
#include "core/storage/dcp/dcp_internal.h"
#include "core/storage/safetensors/safetensors.h"

namespace dcpp {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeader = uint64_t{100} << 20;  // as the safetensors library
constexpr char kShardingKey[] = "DCP_SHARDING_INFO";

uint64_t Le64(const unsigned char* p) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];
  return n;
}

}  // namespace

bool IsSafetensorsBlob(FileSource& src, uint64_t offset) {
  const uint64_t size = src.Size();
  if (offset > size || size - offset < 10) return false;
  unsigned char head[9];
  src.ReadAt(offset, head, sizeof head);
  return head[8] == '{' && Le64(head) <= kMaxHeader;
}

SafetensorsBlob ReadSafetensorsBlob(FileSource& src, uint64_t offset, const std::string& where) {
  const uint64_t size = src.Size();
  DCPP_CHECK(offset <= size && size - offset >= 8, where, ": the safetensors blob is truncated");
  unsigned char len[8];
  src.ReadAt(offset, len, 8);
  const uint64_t n = Le64(len);
  DCPP_CHECK(n <= kMaxHeader && n <= size - offset - 8, where, ": the safetensors blob's header length ", n,
             " goes beyond the end of the file (", size, " bytes)");
  std::string text(static_cast<size_t>(n), '\0');
  src.ReadAt(offset + 8, text.data(), text.size());
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  DCPP_CHECK(!doc.is_discarded() && doc.is_object(), where, ": the safetensors blob's header is not a JSON object");
  const uint64_t data = offset + 8 + n;
  json sharding;
  if (doc.contains("__metadata__") && doc["__metadata__"].is_object() &&
      doc["__metadata__"].contains(kShardingKey) && doc["__metadata__"][kShardingKey].is_string()) {
    sharding = json::parse(doc["__metadata__"][kShardingKey].get<std::string>(), nullptr, false);
    DCPP_CHECK(!sharding.is_discarded() && sharding.is_object(), where, ": __metadata__ ", kShardingKey,
               " is not a JSON object");
  }
  SafetensorsBlob out;
  for (const auto& [name, v] : doc.items()) {
    if (name == "__metadata__") continue;
    const std::string what = StrCat(where, ": safetensors tensor '", name, "'");
    DCPP_CHECK(v.is_object() && v.contains("dtype") && v["dtype"].is_string() && v.contains("shape") &&
                   v["shape"].is_array() && v.contains("data_offsets") && v["data_offsets"].is_array() &&
                   v["data_offsets"].size() == 2,
               what, " has no dtype, shape and data_offsets");
    SafetensorsBlob::Entry e;
    e.dtype = DtypeFromSafetensors(v["dtype"].get<std::string>());
    DCPP_CHECK(!e.dtype.empty(), what, " has dtype ", v["dtype"].dump(), ", which dcpp does not read");
    for (const json& s : v["shape"]) {
      DCPP_CHECK(s.is_number_unsigned() && s.get<uint64_t>() < (uint64_t{1} << 62), what, " has shape ",
                 v["shape"].dump());
      e.shape.push_back(s.get<int64_t>());
    }
    if (v["dtype"] == "F4") {  // two 4-bit values a byte: dcpp's float4_e2m1fn_x2 counts bytes
      DCPP_CHECK(!e.shape.empty() && e.shape.back() % 2 == 0, what, " has an odd F4 shape");
      e.shape.back() /= 2;
    }
    const json& offs = v["data_offsets"];
    DCPP_CHECK(offs[0].is_number_unsigned() && offs[1].is_number_unsigned(), what, " has data_offsets ",
               offs.dump());
    const uint64_t b = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    int64_t numel = 1;
    for (int64_t s : e.shape) DCPP_CHECK(!__builtin_mul_overflow(numel, s, &numel), what, " is too large");
    const uint64_t nbytes = static_cast<uint64_t>(numel) * ElementSize(DtypeFromName(e.dtype));
    DCPP_CHECK(b <= end && end - b == nbytes && end <= size - data, what, " has data_offsets ", offs.dump(),
               " that do not hold its ", nbytes, " bytes inside the file");
    e.offset = data + b;
    e.nbytes = nbytes;
    if (!sharding.is_null() && sharding.contains(name)) {
      const json& so = sharding[name];
      DCPP_CHECK(so.is_object() && so.contains("saved_offsets") && so["saved_offsets"].is_array(), what,
                 ": its ", kShardingKey, " entry has no saved_offsets list");
      for (const json& o : so["saved_offsets"]) {
        DCPP_CHECK(o.is_number_unsigned(), what, ": saved_offsets ", so["saved_offsets"].dump());
        e.saved_offsets.push_back(o.get<int64_t>());
      }
      e.has_offsets = true;
    }
    out.entries.emplace(name, std::move(e));
  }
  return out;
}

}  // namespace dcpp
