#include "core/comm/nccl.h"

#include "core/base/error.h"

#ifdef DCPP_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dcpp {

#ifdef DCPP_WITH_CUDA
bool BuiltWithNccl() { return true; }

c10::intrusive_ptr<c10d::Backend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size, int device,
                                                  std::chrono::milliseconds timeout) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("dcpp_nccl/", store);
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, size, opts);
}
#else
bool BuiltWithNccl() { return false; }

c10::intrusive_ptr<c10d::Backend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>&, int,
                                                  int, int, std::chrono::milliseconds) {
  throw Error("NCCL process groups need the CUDA build: bazel build --config=cuda");
}
#endif

}  // namespace dcpp
