// C10dComm: dcpp's Comm over a PyTorch c10d process group — the trainer's own (gloo on CPU,
// NCCL on CUDA), or one dcpp makes from torchrun's environment (see torchrun.h).
//
// Plans and errors travel as uint8 tensors: lengths are exchanged first, then payloads padded
// to the longest. With an NCCL group the tensors live on the current CUDA device. Every
// collective waits at most `timeout`; a rank that died makes the others throw dcpp::Error
// (gloo reports the closed connection at once; otherwise the timeout fires) instead of hanging,
// saying which of the two happened, and once one collective failed every later one fails at
// once, naming the first failure.
//
// The process group must outlive the C10dComm. Calls are collective and not thread-safe.
#pragma once

#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "core/comm/comm.h"

namespace c10d {
class ProcessGroup;
}  // namespace c10d

namespace dcpp {

class C10dComm final : public Comm {
 public:
  // Uses `pg`'s backend for `device` (CPU -> gloo, CUDA -> NCCL).
  C10dComm(c10::intrusive_ptr<c10d::ProcessGroup> pg, c10::Device device,
           std::chrono::milliseconds timeout = std::chrono::minutes(10));
  C10dComm(c10::intrusive_ptr<c10d::Backend> backend, c10::Device device,
           std::chrono::milliseconds timeout = std::chrono::minutes(10));
  ~C10dComm() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::vector<std::string> Gather(const std::string& mine, int root) override;
  std::string Scatter(const std::vector<std::string>& parts, int root) override;
  std::string Broadcast(const std::string& data, int root) override;
  std::string AllReduceError(const std::string& error) override;
  // Straight into `t` when it is contiguous and on this group's device (e.g. a CUDA tensor
  // with NCCL); otherwise through a temporary there (gloo: CPU, NCCL: CUDA), copied back.
  void BroadcastTensor(at::Tensor& t, int root) override;
  std::string device_type() const override;

  // Every rank's `mine`, on every rank.
  std::vector<std::string> AllGather(const std::string& mine);

 private:
  c10::intrusive_ptr<c10d::Backend> backend_;
  c10::Device device_;
  std::chrono::milliseconds timeout_;
  std::string broken_;  // the first failed collective's error; later ones fail at once
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace dcpp
