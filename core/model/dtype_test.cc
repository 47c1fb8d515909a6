// Dtype names and sizes: every dtype torch.save writes has a stable name that maps back to it.
#include "core/model/dtype.h"

#include <gtest/gtest.h>

#include "core/testing/errors.h"

namespace dcpp {
namespace {

struct Expected {
  c10::ScalarType type;
  const char* name;
  int64_t size;
};

// PyTorch 2.11's torch.<name> and its itemsize, for every dtype torch.save can write
// (quantized ones aside).
const Expected kExpected[] = {
    {at::kBool, "bool", 1},
    {at::kByte, "uint8", 1},
    {at::kChar, "int8", 1},
    {at::kShort, "int16", 2},
    {at::kInt, "int32", 4},
    {at::kLong, "int64", 8},
    {at::kUInt16, "uint16", 2},
    {at::kUInt32, "uint32", 4},
    {at::kUInt64, "uint64", 8},
    {at::kHalf, "float16", 2},
    {at::kBFloat16, "bfloat16", 2},
    {at::kFloat, "float32", 4},
    {at::kDouble, "float64", 8},
    {at::kComplexHalf, "complex32", 4},
    {at::kComplexFloat, "complex64", 8},
    {at::kComplexDouble, "complex128", 16},
    {at::kFloat8_e5m2, "float8_e5m2", 1},
    {at::kFloat8_e4m3fn, "float8_e4m3fn", 1},
    {at::kFloat8_e5m2fnuz, "float8_e5m2fnuz", 1},
    {at::kFloat8_e4m3fnuz, "float8_e4m3fnuz", 1},
    {at::kFloat8_e8m0fnu, "float8_e8m0fnu", 1},
    {at::kFloat4_e2m1fn_x2, "float4_e2m1fn_x2", 1},
    {c10::ScalarType::Bits1x8, "bits1x8", 1},
    {c10::ScalarType::Bits2x4, "bits2x4", 1},
    {c10::ScalarType::Bits4x2, "bits4x2", 1},
    {c10::ScalarType::Bits8, "bits8", 1},
    {c10::ScalarType::Bits16, "bits16", 2},
};

TEST(Dtype, EveryNameMapsBothWaysWithItsSize) {
  for (const Expected& e : kExpected) {
    EXPECT_EQ(DtypeName(e.type), e.name);
    EXPECT_EQ(DtypeFromName(e.name), e.type) << e.name;
    EXPECT_TRUE(IsDtypeName(e.name)) << e.name;
    EXPECT_EQ(ElementSize(e.type), e.size) << e.name;
  }
}

TEST(Dtype, QuantizedAndUnknownAreRefusedByName) {
  EXPECT_HAS(testing::ErrorOf([] { DtypeName(at::kQInt8); }), "QInt8");
  EXPECT_HAS(testing::ErrorOf([] { DtypeFromName("float6_e3m2"); }), "unknown dtype 'float6_e3m2'");
  EXPECT_FALSE(IsDtypeName("qint8"));
  EXPECT_FALSE(IsDtypeName("Float8_e8m0fnu"));  // names are case-sensitive
}

}  // namespace
}  // namespace dcpp
