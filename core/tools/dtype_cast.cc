#include "core/tools/dtype_cast.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <fnmatch.h>

#include <map>

#include "core/base/error.h"
#include "core/model/dtype.h"

namespace dcpp {
namespace {

// The dtypes a rule may name, by every spelling accepted; "" is "keep".
const std::map<std::string, std::string>& TargetNames() {
  static const auto* names = new std::map<std::string, std::string>{
      {"bf16", "bfloat16"}, {"bfloat16", "bfloat16"}, {"fp16", "float16"}, {"float16", "float16"},
      {"half", "float16"},  {"fp32", "float32"},      {"float32", "float32"}, {"float", "float32"},
      {"fp64", "float64"},  {"float64", "float64"},   {"double", "float64"},  {"keep", ""},
  };
  return *names;
}

// What the default rule casts: the ordinary floating-point dtypes.
bool IsWideFloat(c10::ScalarType t) {
  return t == c10::kDouble || t == c10::kFloat || t == c10::kHalf || t == c10::kBFloat16;
}

// What a pattern rule may cast besides: the float8 value dtypes (not the e8m0 scale dtype,
// whose values are exponents, nor the packed float4 pairs).
bool IsFloat8Value(c10::ScalarType t) {
  return t == c10::ScalarType::Float8_e4m3fn || t == c10::ScalarType::Float8_e5m2 ||
         t == c10::ScalarType::Float8_e4m3fnuz || t == c10::ScalarType::Float8_e5m2fnuz;
}

}  // namespace

DtypeCasts DtypeCasts::Parse(const std::vector<std::string>& rules) {
  DtypeCasts casts;
  bool has_default = false;
  Rule fallback;
  for (const std::string& text : rules) {
    const size_t eq = text.rfind('=');
    Rule r;
    std::string name = text;
    if (eq != std::string::npos) {
      r.pattern = text.substr(0, eq);
      name = text.substr(eq + 1);
      DCPP_CHECK(!r.pattern.empty(), "dtype rule '", text, "': the key pattern before '=' is empty");
    }
    const auto it = TargetNames().find(name);
    DCPP_CHECK(it != TargetNames().end(), "dtype rule '", text, "': unknown dtype '", name,
               "' (expected bf16, fp16, fp32, fp64 or keep)");
    r.dtype = it->second;
    if (r.pattern.empty()) {
      DCPP_CHECK(!has_default, "dtype rule '", text, "': a second rule without a key pattern (the "
                 "first was '", fallback.dtype.empty() ? "keep" : fallback.dtype, "')");
      has_default = true;
      fallback = r;
    } else {
      casts.rules_.push_back(std::move(r));
    }
  }
  if (has_default) casts.rules_.push_back(std::move(fallback));
  return casts;
}

std::string DtypeCasts::Target(const std::string& key, const std::string& dtype) const {
  const c10::ScalarType from = DtypeFromName(dtype);
  for (const Rule& r : rules_) {
    if (r.pattern.empty()) return IsWideFloat(from) && !r.dtype.empty() ? r.dtype : dtype;
    if (fnmatch(r.pattern.c_str(), key.c_str(), 0) != 0) continue;
    return (IsWideFloat(from) || IsFloat8Value(from)) && !r.dtype.empty() ? r.dtype : dtype;
  }
  return dtype;
}

CastRows::CastRows(c10::ScalarType from_dtype, c10::ScalarType to_dtype, const std::vector<int64_t>& byte_shape)
    : from(from_dtype), to(to_dtype), cast(from_dtype != to_dtype) {
  int64_t row_bytes = 1;
  for (size_t d = 1; d < byte_shape.size(); ++d) row_bytes *= byte_shape[d];
  out_row_bytes = row_bytes;
  if (!cast) return;
  if (byte_shape.size() == 1) {
    unit = ElementSize(from);
    out_unit = ElementSize(to);
  } else {
    out_row_bytes = row_bytes / ElementSize(from) * ElementSize(to);
  }
}

void CastElements(const void* src, c10::ScalarType from, void* dst, c10::ScalarType to, int64_t numel) {
  const at::Tensor in = at::from_blob(const_cast<void*>(src), {numel}, at::TensorOptions().dtype(from));
  at::Tensor out = at::from_blob(dst, {numel}, at::TensorOptions().dtype(to));
  out.copy_(in);
}

}  // namespace dcpp
