// Casting on the way out: which tensors convert() and ExportSafetensors() write in another
// floating-point dtype, and the cast itself, band by band as the data streams through.
//
// Rules are strings, as the tools' repeatable `--dtype` flag takes them:
//   "bf16"            every float64/float32/float16/bfloat16 tensor becomes bfloat16
//   "*norm*=fp32"     tensors whose (target) key matches the glob become float32
//   "*.scale=keep"    ... keep their dtype
// Dtypes: bf16|bfloat16, fp16|float16|half, fp32|float32|float, fp64|float64|double, keep.
// The first pattern rule that matches a key wins; a key no pattern matches gets the default
// rule (at most one), if any. A pattern rule may also cast float8 tensors (e4m3/e5m2 kinds);
// the default rule leaves them, like every tensor that is not floating point (integers, bool,
// complex, packed float4 and scale dtypes): those keep their dtype whatever the rules say.
//
// Values are rounded as torch's Tensor.to() rounds them (round to nearest even; the same
// ATen kernel does it), so a dcpp bf16 export equals `t.to(torch.bfloat16)` bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>

namespace dcpp {

// The tools' help text for --dtype.
constexpr char kDtypeRulesHelp[] =
    "cast on the way out (repeatable): DTYPE casts every float64/32/16/bf16 tensor, "
    "PATTERN=DTYPE the keys matching the glob (first match wins); DTYPE is bf16, fp16, fp32, "
    "fp64 or keep, e.g. --dtype bf16 --dtype '*norm*=fp32'";

class DtypeCasts {
 public:
  DtypeCasts() = default;
  // Throws dcpp::Error naming the rule when one is malformed or names an unknown dtype, or
  // when two rules have no pattern.
  static DtypeCasts Parse(const std::vector<std::string>& rules);

  bool empty() const { return rules_.empty(); }
  // The dtype name `key` (saved as `dtype`, a metadata dtype name) is written as.
  std::string Target(const std::string& key, const std::string& dtype) const;

 private:
  struct Rule {
    std::string pattern;  // empty: the default rule
    std::string dtype;    // a metadata dtype name, or empty for "keep"
  };
  std::vector<Rule> rules_;  // pattern rules in order, then the default rule
};

// How bands of rows in BandReader's byte geometry (core/engine/band_reader.h: the last
// dimension counted in bytes, so that the rows of a 1-D or 0-d tensor are single bytes) map to
// rows of the same tensor in another dtype: every `unit` source rows (one element's bytes for
// a 1-D tensor, else one row) become `out_unit` rows of `out_row_bytes` bytes. A band to cast
// must hold a multiple of `unit` rows.
struct CastRows {
  CastRows(c10::ScalarType from, c10::ScalarType to, const std::vector<int64_t>& byte_shape);
  int64_t OutRows(int64_t rows) const { return rows / unit * out_unit; }

  c10::ScalarType from, to;
  bool cast;  // from != to
  int64_t unit = 1, out_unit = 1, out_row_bytes = 0;
};

// Converts `numel` elements at `src` (of dtype `from`) into `dst` (of dtype `to`), rounding as
// Tensor.to() does. `src` and `dst` must not overlap.
void CastElements(const void* src, c10::ScalarType from, void* dst, c10::ScalarType to, int64_t numel);

}  // namespace dcpp
