// An NCCL process group for dcpp's own use (tests, tools); trainers pass their own. Only in
// the --config=cuda build; the CPU build's MakeNcclBackend throws dcpp::Error saying so.
#pragma once

#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <chrono>

namespace c10d {
class Store;
}

namespace dcpp {

// True in the --config=cuda build.
bool BuiltWithNccl();

// An NCCL backend of `size` ranks meeting in `store`; this rank uses CUDA device `device`.
c10::intrusive_ptr<c10d::Backend> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                  int rank, int size, int device,
                                                  std::chrono::milliseconds timeout);

}  // namespace dcpp
