// Property-style tests: random shapes, dtypes and source/target chunkings (seeded) load
// bit-identically; every fixed-size dtype, 0-d and empty tensors round-trip.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <random>

#include "core/dcpp.h"
#include "core/model/dtype.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::TempDir;

const c10::ScalarType kDtypes[] = {
    at::kBool, at::kByte, at::kChar, at::kShort, at::kInt, at::kLong, at::kHalf, at::kBFloat16,
    at::kFloat, at::kDouble, at::kComplexFloat, at::kComplexDouble, at::kFloat8_e5m2,
    at::kFloat8_e4m3fn, at::kFloat8_e5m2fnuz, at::kFloat8_e4m3fnuz, at::kUInt16, at::kUInt32,
    at::kUInt64, at::kComplexHalf, at::kFloat8_e8m0fnu, at::kFloat4_e2m1fn_x2,
    c10::ScalarType::Bits1x8, c10::ScalarType::Bits2x4, c10::ScalarType::Bits4x2,
    c10::ScalarType::Bits8, c10::ScalarType::Bits16};

// Random bits of any dtype: fill the bytes, then view them as the dtype.
at::Tensor RandomBits(const std::vector<int64_t>& shape, c10::ScalarType dtype, std::mt19937& rng) {
  const int64_t es = ElementSize(dtype);
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  at::Tensor bytes = at::empty({n * es}, at::kByte);
  auto* p = bytes.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n * es; ++i) p[i] = static_cast<uint8_t>(rng());
  if (dtype == at::kBool) bytes.bitwise_and_(1);  // only 0/1 are valid bools
  return bytes.view(dtype).view(shape);
}

// All-zero bytes of `like`'s dtype and shape (float4_e2m1fn_x2 and the bits dtypes cannot fill).
at::Tensor ZeroBits(const at::Tensor& like) {
  return at::zeros({like.numel() * like.element_size()}, at::kByte).view(like.scalar_type()).view(like.sizes());
}

bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  if (a.numel() == 0) return true;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.const_data_ptr(), y.const_data_ptr(), x.numel() * x.element_size()) == 0;
}

at::Tensor Slice(const at::Tensor& full, const Box& box) {
  at::Tensor v = full;
  for (size_t d = 0; d < box.sizes.size(); ++d) v = v.narrow(d, box.offsets[d], box.sizes[d]);
  return v;
}

// A random layout over a random 1-D or 2-D mesh for a tensor of `ndim` dimensions.
Layout RandomLayout(int ndim, std::mt19937& rng) {
  Layout l;
  const int mesh_dims = 1 + static_cast<int>(rng() % 2);
  for (int k = 0; k < mesh_dims; ++k) {
    l.mesh.push_back(1 + static_cast<int64_t>(rng() % 4));
    if (ndim == 0 || rng() % 4 == 0) {
      l.placements.push_back(Placement::Replicate());
    } else {
      l.placements.push_back(Placement::Shard(static_cast<int>(rng() % ndim)));
    }
  }
  return l;
}

TEST(Property, RandomShapesDtypesAndChunkingsLoadBitIdentically) {
  std::mt19937 rng(20261124);
  constexpr int kCases = 200;
  for (int c = 0; c < kCases; ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    TempDir dir;
    const int ntensors = 1 + static_cast<int>(rng() % 3);
    std::vector<at::Tensor> full;
    std::vector<Layout> src_layout, dst_layout;
    StateDict saved;
    for (int i = 0; i < ntensors; ++i) {
      const int ndim = static_cast<int>(rng() % 4);
      std::vector<int64_t> shape;
      for (int d = 0; d < ndim; ++d) shape.push_back(static_cast<int64_t>(rng() % 9));
      const c10::ScalarType dtype = kDtypes[rng() % (sizeof(kDtypes) / sizeof(kDtypes[0]))];
      full.push_back(RandomBits(shape, dtype, rng));
      src_layout.push_back(RandomLayout(ndim, rng));
      dst_layout.push_back(RandomLayout(ndim, rng));
      const std::string fqn = "t" + std::to_string(i);
      // Sources as transposed copies now and then, to exercise non-contiguous writes.
      at::Tensor src = full.back();
      if (ndim == 2 && rng() % 2) src = src.t().contiguous().t();
      for (int64_t r = 0; r < src_layout.back().world_size(); ++r) {
        saved.AddSharded(fqn, src, src_layout.back(), r);
      }
    }
    SaveOptions so;
    so.thread_count = 1 + static_cast<int>(rng() % 3);
    ASSERT_NO_THROW(save(saved, dir.path(), so));

    StateDict target;
    for (int i = 0; i < ntensors; ++i) {
      const std::string fqn = "t" + std::to_string(i);
      for (int64_t r = 0; r < dst_layout[i].world_size(); ++r) {
        target.AddUnallocated(fqn, full[i].scalar_type(), full[i].sizes().vec(), dst_layout[i], r);
      }
    }
    LoadOptions lo;
    lo.thread_count = 1 + static_cast<int>(rng() % 3);
    lo.staging_buffers = 2 + static_cast<int>(rng() % 3);
    lo.staging_bytes = lo.staging_buffers + static_cast<int64_t>(rng() % 256);  // tiny: many blocks
    ASSERT_NO_THROW(load(target, dir.path(), lo));
    for (int i = 0; i < ntensors; ++i) {
      const TensorEntry* e = target.FindTensor("t" + std::to_string(i));
      for (const LocalChunk& ch : e->chunks) {
        ASSERT_TRUE(BitEqual(ch.tensor, Slice(full[i], ch.box)))
            << e->fqn << " " << DtypeName(e->dtype) << " chunk " << ch.box.ToString() << " from "
            << src_layout[i].ToString() << " to " << dst_layout[i].ToString();
      }
    }
  }
}

TEST(Property, EveryDtypeZeroDimAndEmptyTensors) {
  std::mt19937 rng(7);
  TempDir dir;
  StateDict saved;
  std::vector<at::Tensor> values;
  for (c10::ScalarType dt : kDtypes) {
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{}, std::vector<int64_t>{0}, std::vector<int64_t>{3, 0, 2},
          std::vector<int64_t>{5, 3}}) {
      values.push_back(RandomBits(shape, dt, rng));
      saved.AddTensor("v" + std::to_string(values.size()), values.back());
    }
  }
  save(saved, dir.path());
  StateDict back;
  for (size_t i = 0; i < values.size(); ++i) {
    back.AddTensor("v" + std::to_string(i + 1), ZeroBits(values[i]));
  }
  load(back, dir.path());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_TRUE(BitEqual(back.FindTensor("v" + std::to_string(i + 1))->chunks[0].tensor, values[i]))
        << DtypeName(values[i].scalar_type()) << " " << values[i].sizes();
  }
}

}  // namespace
}  // namespace dcpp
