// StagingRing: the path between storage and tensor memory that storage cannot reach directly
// (CUDA tensors, non-contiguous views): a ring of host buffers that a save or load thread
// cycles through, so that host memory stays within the ring whatever the checkpoint size.
//
// For CUDA tensors the buffers are pinned and every copy runs on a copy stream of the ring's
// own (one per device), each buffer with an event, so copies overlap storage I/O:
//   save: the device-to-host copy into buffer k+1 runs while buffer k is hashed and written;
//   load: the read into buffer k+1 runs while buffer k is copied host-to-device.
// The copy stream first waits for the work already queued on the device's current stream, so
// a save sees every earlier kernel's result and a load's copies land after earlier writes to
// the targets. When a ring is drained (or destroyed) every copy has completed.
//
// CPU tensors take the same path with ordinary host buffers and synchronous copies.
//
// Not thread-safe: one ring per thread. The tensors handed in must stay alive, unchanged on the
// device, until the ring is drained. Callbacks run on the ring's thread, in submission order,
// from a later ToHost/Acquire call or from Drain(); an exception thrown by one propagates out
// of that call (the buffer is released first).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/Stream.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <vector>

namespace dcpp {

// A stream of `device`'s pool for copies, made to wait for the work queued so far on the
// device's current stream (the trainer's kernels come first).
c10::Stream CopyStreamAfterCurrent(c10::Device device);

class StagingRing {
 public:
  // `pool_bytes` of host memory in `buffers` buffers (at least 2, for double buffering).
  StagingRing(int64_t pool_bytes, int buffers);
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  // The size of one buffer: callers split chunks into blocks of at most this many bytes.
  int64_t block_bytes() const { return block_bytes_; }

  // Save: copies `src` (a block of a chunk; any device, any strides) into a free buffer, row
  // major; `ready(data, n)` runs once the bytes are in host memory.
  void ToHost(const at::Tensor& src, std::function<void(const uint8_t* data, int64_t n)> ready);

  // Load, in two steps: Acquire a free buffer of `bytes` (pinned when `pinned`) and fill it
  // from storage; then Scatter copies regions of it into the targets. `copies` pairs a target
  // view with a view of the buffer (use View()). The buffer is busy until the copies are done.
  struct Buffer {
    int slot = -1;
    uint8_t* data = nullptr;
    int64_t bytes = 0;
  };
  Buffer Acquire(int64_t bytes, bool pinned);
  // A view of `buf` as a row-major tensor of `dtype` and `sizes`, starting at byte `offset`.
  at::Tensor View(const Buffer& buf, int64_t offset, c10::ScalarType dtype, at::IntArrayRef sizes);
  void Scatter(const Buffer& buf, const std::vector<std::pair<at::Tensor, at::Tensor>>& copies);

  // Waits for every copy and runs every pending callback.
  void Drain();

  int64_t staged_bytes() const { return staged_bytes_; }  // bytes that went through the ring
  int64_t host_bytes() const { return host_bytes_; }      // host memory the ring holds

 private:
  struct Slot;
  int Take(int64_t bytes, bool pinned);
  void Retire(int slot);
  void Release(int slot, bool cuda, c10::Device device, std::function<void()> then);
  // The ring's copy stream on `device` (CopyStreamAfterCurrent on first use).
  c10::Stream CopyStream(c10::Device device);

  int64_t block_bytes_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::deque<int> busy_;  // slots in submission order
  std::map<c10::DeviceIndex, c10::Stream> streams_;
  int64_t staged_bytes_ = 0;
  int64_t host_bytes_ = 0;
};

}  // namespace dcpp
