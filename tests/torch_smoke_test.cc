// LibTorch is linked and usable through the narrow ATen headers the engine includes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

TEST(TorchSmoke, TensorOpsAndViews) {
  at::Tensor a = at::arange(12, at::kFloat).reshape({3, 4});
  at::Tensor t = a.t();  // a non-contiguous view, as the engine must handle
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.stride(0), 1);
  at::Tensor sum = (t.contiguous() * 2).sum();
  EXPECT_EQ(sum.item<float>(), 2.0f * 66.0f);
  at::Tensor bf = a.to(at::kBFloat16);
  EXPECT_EQ(bf.element_size(), 2);
  EXPECT_TRUE(at::equal(bf.to(at::kFloat), a));
}
