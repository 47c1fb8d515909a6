#include "core/model/dtype.h"

#include <utility>

#include "core/base/error.h"

namespace dcpp {
namespace {

using c10::ScalarType;

const std::pair<ScalarType, const char*> kNames[] = {
    {ScalarType::Bool, "bool"},
    {ScalarType::Byte, "uint8"},
    {ScalarType::Char, "int8"},
    {ScalarType::Short, "int16"},
    {ScalarType::Int, "int32"},
    {ScalarType::Long, "int64"},
    {ScalarType::UInt16, "uint16"},
    {ScalarType::UInt32, "uint32"},
    {ScalarType::UInt64, "uint64"},
    {ScalarType::Half, "float16"},
    {ScalarType::BFloat16, "bfloat16"},
    {ScalarType::Float, "float32"},
    {ScalarType::Double, "float64"},
    {ScalarType::ComplexHalf, "complex32"},
    {ScalarType::ComplexFloat, "complex64"},
    {ScalarType::ComplexDouble, "complex128"},
    {ScalarType::Float8_e5m2, "float8_e5m2"},
    {ScalarType::Float8_e4m3fn, "float8_e4m3fn"},
    {ScalarType::Float8_e5m2fnuz, "float8_e5m2fnuz"},
    {ScalarType::Float8_e4m3fnuz, "float8_e4m3fnuz"},
    // MX block scales: an 8-bit power of two.
    {ScalarType::Float8_e8m0fnu, "float8_e8m0fnu"},
    // NVFP4/MXFP4 data: one byte holds two 4-bit values, and the shape counts bytes.
    {ScalarType::Float4_e2m1fn_x2, "float4_e2m1fn_x2"},
    // Uninterpreted bit containers (torch.bits8 ...): torch.save keeps them, so dcpp does.
    {ScalarType::Bits1x8, "bits1x8"},
    {ScalarType::Bits2x4, "bits2x4"},
    {ScalarType::Bits4x2, "bits4x2"},
    {ScalarType::Bits8, "bits8"},
    {ScalarType::Bits16, "bits16"},
};

}  // namespace

std::string DtypeName(ScalarType t) {
  for (const auto& [type, name] : kNames) {
    if (type == t) return name;
  }
  throw Error(StrCat("dtype ", c10::toString(t), " cannot be stored by dcpp"));
}

ScalarType DtypeFromName(const std::string& name) {
  for (const auto& [type, n] : kNames) {
    if (name == n) return type;
  }
  throw Error(StrCat("unknown dtype '", name, "'"));
}

int64_t ElementSize(ScalarType t) { return static_cast<int64_t>(c10::elementSize(t)); }

bool IsDtypeName(const std::string& name) {
  for (const auto& kv : kNames) {
    if (name == kv.second) return true;
  }
  return false;
}

}  // namespace dcpp
