// Comm: the collectives the engine needs between ranks, and nothing else. Only plans,
// metadata and error messages travel through a Comm; tensor bytes go rank <-> storage, except
// where a load planner chooses read-once-and-broadcast for a replicated region
// (BroadcastTensor).
//
// LocalComm is the world of one (single process). The c10d-backed Comm (gloo on CPU, NCCL on
// CUDA) implements the same interface over a trainer's process group.
//
// Every call is collective: all ranks call it in the same order. Implementations must bound
// every wait by their timeout and throw dcpp::Error rather than hang.
#pragma once

#include <string>
#include <vector>

namespace at {
class Tensor;
}  // namespace at

namespace dcpp {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // `root` receives every rank's `mine` in rank order; other ranks receive an empty vector.
  virtual std::vector<std::string> Gather(const std::string& mine, int root) = 0;
  // Rank r receives `parts[r]` (only `root`'s `parts` is read).
  virtual std::string Scatter(const std::vector<std::string>& parts, int root) = 0;
  virtual std::string Broadcast(const std::string& data, int root) = 0;
  // Every rank passes its error ("" = none); every rank gets the lowest rank's error, or "".
  virtual std::string AllReduceError(const std::string& error) = 0;
  // Every rank passes a tensor of the same dtype and shape (any device, any strides); `root`'s
  // values land in every rank's `t`.
  virtual void BroadcastTensor(at::Tensor& t, int root) = 0;
  // The device type collectives run on: "cpu" (gloo, a single process) or "cuda" (NCCL).
  // Planners see it as ctx.comm_device.
  virtual std::string device_type() const { return "cpu"; }
};

// The single-process world: rank 0 of 1.
class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::vector<std::string> Gather(const std::string& mine, int) override { return {mine}; }
  std::string Scatter(const std::vector<std::string>& parts, int) override { return parts.at(0); }
  std::string Broadcast(const std::string& data, int) override { return data; }
  std::string AllReduceError(const std::string& error) override { return error; }
  void BroadcastTensor(at::Tensor&, int) override {}
};

}  // namespace dcpp
