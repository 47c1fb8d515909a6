// Shared by the DCP format's tests: tensors of every dtype dcpp holds, with values that tell
// them apart, and a sample state dict (every dtype sharded over two ranks, a non-contiguous
// tensor, a 0-d and an empty one, a raw blob) with its load targets.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/dcpp.h"

namespace dcpp {

const std::vector<c10::ScalarType> kDtypes = {
    at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort,
    at::kChar, at::kByte, at::kBool, at::kComplexFloat, at::kComplexDouble,
    at::kFloat8_e4m3fn, at::kFloat8_e5m2, at::kUInt16, at::kUInt32, at::kUInt64};

inline at::Tensor Values(at::IntArrayRef shape, c10::ScalarType dtype, int seed) {
  if (dtype == at::kFloat4_e2m1fn_x2 || c10::isBitsType(dtype)) {  // no conversions: bytes
    const int64_t n = c10::multiply_integers(shape) * static_cast<int64_t>(c10::elementSize(dtype));
    return at::arange(n, at::kLong).mul(7).add(seed).remainder(256).to(at::kByte).view(dtype).reshape(shape);
  }
  const at::Tensor v = at::arange(c10::multiply_integers(shape), at::kDouble).add(seed).remainder(97).div(4);
  if (dtype == at::kBool) return v.gt(10).reshape(shape);
  if (at::isComplexType(dtype)) return at::complex(v, v.neg()).to(dtype).reshape(shape);
  return v.to(dtype).reshape(shape);
}

inline bool Same(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  // Compare bytes: float8 and unsigned types have few ops.
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return x.numel() == 0 ||
         std::memcmp(x.const_data_ptr(), y.const_data_ptr(), static_cast<size_t>(x.nbytes())) == 0;
}

// Every dtype, sharded over two "ranks" (two chunks), a non-contiguous source, a 0-d and an
// empty tensor, and a raw blob.
inline StateDict Sample() {
  StateDict sd;
  int seed = 0;
  for (c10::ScalarType dtype : kDtypes) {
    sd.AddSharded(std::string("t.") + c10::toString(dtype), Values({6, 5}, dtype, seed++),
                  Layout::Sharded(2, 0), 0);
    sd.AddSharded(std::string("t.") + c10::toString(dtype), Values({6, 5}, dtype, seed - 1),
                  Layout::Sharded(2, 0), 1);
  }
  sd.AddTensor("transposed", Values({4, 7}, at::kFloat, 3).t());
  sd.AddTensor("scalar", at::scalar_tensor(42, at::kLong));
  sd.AddTensor("empty", at::zeros({0, 3}));
  sd.AddBytes("blob", std::string("raw\0bytes\xff", 10));
  return sd;
}

inline StateDict Targets(const StateDict& like) {
  StateDict sd;
  for (const TensorEntry& e : like.tensors()) {
    sd.AddUnallocated(e.fqn, e.dtype, e.shape, Layout::Replicated(1), 0);
  }
  for (const BytesEntry& b : like.bytes()) sd.AddBytes(b.fqn, "");
  return sd;
}

inline at::Tensor Full(const StateDict& sd, const std::string& fqn) {
  const TensorEntry* e = sd.FindTensor(fqn);
  at::Tensor full = at::empty(e->shape, at::TensorOptions().dtype(e->dtype));
  for (const LocalChunk& c : e->chunks) {
    at::Tensor view = full;
    for (size_t d = 0; d < c.box.sizes.size(); ++d) view = view.narrow(d, c.box.offsets[d], c.box.sizes[d]);
    view.copy_(c.tensor);
  }
  return full;
}

}  // namespace dcpp
