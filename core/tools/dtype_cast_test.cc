// DtypeCasts: which key gets which dtype; CastElements: values as Tensor.to() makes them.
#include "core/tools/dtype_cast.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include "core/testing/errors.h"

namespace dcpp {
namespace {

using testing::ErrorOf;

TEST(DtypeCasts, DefaultRuleCastsOrdinaryFloatsOnly) {
  const DtypeCasts c = DtypeCasts::Parse({"bf16"});
  EXPECT_FALSE(c.empty());
  for (const char* d : {"float32", "float64", "float16", "bfloat16"}) EXPECT_EQ(c.Target("w", d), "bfloat16") << d;
  for (const char* d : {"int64", "uint8", "bool", "complex64", "float8_e4m3fn", "float8_e8m0fnu",
                        "float4_e2m1fn_x2"}) {
    EXPECT_EQ(c.Target("w", d), d) << d;
  }
  EXPECT_TRUE(DtypeCasts::Parse({}).empty());
  EXPECT_EQ(DtypeCasts::Parse({}).Target("w", "float32"), "float32");
}

TEST(DtypeCasts, FirstMatchingPatternWinsThenTheDefault) {
  const DtypeCasts c = DtypeCasts::Parse({"fp16", "*norm*=keep", "layers.*.w?=fp32", "*=float64"});
  EXPECT_EQ(c.Target("model.norm.weight", "float32"), "float32");        // keep
  EXPECT_EQ(c.Target("layers.0.wq", "bfloat16"), "float32");             // second pattern
  EXPECT_EQ(c.Target("layers.0.wq.bias", "bfloat16"), "float64");        // '*' only
  EXPECT_EQ(c.Target("tok", "float8_e5m2"), "float64");                  // patterns may widen float8
  EXPECT_EQ(c.Target("tok", "float8_e8m0fnu"), "float8_e8m0fnu");        // scales never
  EXPECT_EQ(c.Target("step", "int64"), "int64");                         // integers never
  EXPECT_EQ(DtypeCasts::Parse({"half", "x=keep"}).Target("y", "float32"), "float16");  // the default
  EXPECT_EQ(DtypeCasts::Parse({"keep"}).Target("y", "float32"), "float32");
}

TEST(DtypeCasts, BadRulesAreNamed) {
  EXPECT_HAS(ErrorOf([] { DtypeCasts::Parse({"bf15"}); }), "dtype rule 'bf15': unknown dtype 'bf15'");
  EXPECT_HAS(ErrorOf([] { DtypeCasts::Parse({"w=int8"}); }), "dtype rule 'w=int8': unknown dtype 'int8'");
  EXPECT_HAS(ErrorOf([] { DtypeCasts::Parse({"=bf16"}); }), "the key pattern before '=' is empty");
  EXPECT_HAS(ErrorOf([] { DtypeCasts::Parse({"bf16", "fp32"}); }),
             "dtype rule 'fp32': a second rule without a key pattern (the first was 'bfloat16')");
}

// Every float32 value class (normal, subnormal, halfway cases, overflow, inf, nan) rounds as
// torch rounds it, bit for bit.
TEST(CastElements, MatchesTensorTo) {
  at::manual_seed(3);
  at::Tensor src = at::cat({at::randn({1000}) * 1e3, at::randn({100}) * 1e-40,
                            at::tensor({1.0f + 1.0f / 256, 1.0f + 3.0f / 512, 65520.0f, std::numeric_limits<float>::max(),
                                        std::numeric_limits<float>::infinity(),
                                        -std::numeric_limits<float>::infinity(),
                                        std::numeric_limits<float>::quiet_NaN(), -0.0f})});
  for (c10::ScalarType to : {at::kBFloat16, at::kHalf, at::kDouble}) {
    at::Tensor out = at::empty({src.numel()}, at::TensorOptions().dtype(to));
    CastElements(src.data_ptr(), at::kFloat, out.data_ptr(), to, src.numel());
    const at::Tensor want = src.to(to);
    EXPECT_TRUE(at::equal(out.view(at::kByte), want.contiguous().view(at::kByte))) << to;
  }
  const at::Tensor h = at::randn({77}).to(at::kHalf);
  at::Tensor back = at::empty({77});
  CastElements(h.data_ptr(), at::kHalf, back.data_ptr(), at::kFloat, 77);
  EXPECT_TRUE(at::equal(back.to(at::kHalf), h));  // widening is exact
}

}  // namespace
}  // namespace dcpp
