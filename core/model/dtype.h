// Names of the tensor dtypes dcpp stores: every fixed-size LibTorch dtype (bool, all integer
// widths, float16/bfloat16/float32/float64, complex, the float8 kinds, float4_e2m1fn_x2 and
// the bits containers): every dtype torch.save can write. Names are stable on disk ("float32",
// "bfloat16", "float8_e4m3fn", ...). float4_e2m1fn_x2 is one byte holding two 4-bit values;
// its shape counts bytes, as LibTorch's does. Quantized dtypes (qint8 ...) carry a scale and
// zero point beside the bytes and are refused. Thread-safe.
#pragma once

#include <c10/core/ScalarType.h>

#include <string>

namespace dcpp {

// The on-disk name of `t`; throws dcpp::Error for a dtype dcpp cannot store (e.g. quantized).
std::string DtypeName(c10::ScalarType t);

// The dtype named `name`; throws dcpp::Error naming it if unknown.
c10::ScalarType DtypeFromName(const std::string& name);
// True if `name` is one of those names.
bool IsDtypeName(const std::string& name);

// Bytes per element.
int64_t ElementSize(c10::ScalarType t);

}  // namespace dcpp
