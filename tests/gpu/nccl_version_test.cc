// In the cuda build: NCCL and the CUDA runtime are linked and answer; with a GPU visible, a
// LibTorch CUDA tensor round-trips through device memory. Skips in the CPU build.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#ifdef DCPP_WITH_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace {

#ifdef DCPP_WITH_CUDA
TEST(Nccl, VersionFromTheLibrary) {
  int version = 0;
  ASSERT_EQ(ncclGetVersion(&version), ncclSuccess);
  // NCCL_VERSION_CODE is major*10000 + minor*100 + patch for NCCL >= 2.9.
  EXPECT_GE(version, 20000) << "version " << version;
  EXPECT_EQ(version / 10000, NCCL_MAJOR) << "header and library disagree on the major version";
}

TEST(Cuda, TensorRoundTripOnDevice) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no GPU visible";
  }
  at::Tensor host = at::arange(1000, at::kFloat);
  at::Tensor dev = host.to(at::Device(at::kCUDA, 0));
  EXPECT_TRUE(dev.is_cuda());
  EXPECT_TRUE(at::equal((dev * 2).cpu(), host * 2));
}
#else
TEST(Nccl, VersionFromTheLibrary) { GTEST_SKIP() << "CPU build: use --config=cuda"; }
#endif

}  // namespace
