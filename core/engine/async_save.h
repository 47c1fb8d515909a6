// async_save(): a save that blocks the trainer only while its tensors are copied to host
// memory, then writes and commits in the background.
//
//   dcpp::AsyncSaver saver;                          // one per trainer; saves never interleave
//   auto pending = saver.Save(sd, "/ckpt/step-200", so);
//   ... keep training: the checkpoint holds the values as they were at Save() ...
//   dcpp::SaveStats st = pending.wait();           // the result, or the save's dcpp::Error
//
// Save() returns once every chunk has been snapshotted: CPU tensors are copied, CUDA tensors
// go to pinned host buffers by asynchronous copies on a copy stream per device (after the
// kernels already queued on the current stream) and one synchronisation per device, so later
// changes to the tensors cannot leak into the checkpoint. Pinned memory comes from PyTorch's
// caching host allocator: the first Save() pays for pinning it, later ones reuse it. The snapshot (host memory equal to
// the state dict's size) lives until the background save ends. Bytes entries are copied too.
//
// With SaveOptions::comm set the background save runs the collectives on that Comm from its
// own thread: give it a process group the trainer does not use meanwhile (as with
// torch.distributed.checkpoint.async_save, e.g. a separate gloo group). Every rank calls
// Save() and wait().
#pragma once

#include <future>
#include <memory>
#include <mutex>
#include <string>

#include "core/engine/save_load.h"

namespace dcpp {

// The result of one async save. Copyable; wait() may be called more than once.
class PendingSave {
 public:
  PendingSave() = default;
  explicit PendingSave(std::shared_future<SaveStats> f) : future_(std::move(f)) {}
  // Blocks until the save committed (returns its stats) or failed (throws its dcpp::Error).
  SaveStats wait() const { return future_.get(); }
  bool done() const;
  bool valid() const { return future_.valid(); }

 private:
  std::shared_future<SaveStats> future_;
};

class AsyncSaver {
 public:
  enum class WhenBusy {
    kWait,    // a Save() while the previous one is in flight waits for it first (default)
    kRefuse,  // ... throws dcpp::Error instead
  };
  explicit AsyncSaver(WhenBusy when_busy = WhenBusy::kWait) : when_busy_(when_busy) {}
  ~AsyncSaver();  // waits for the save in flight (its error, if any, is dropped)
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  PendingSave Save(const StateDict& sd, std::unique_ptr<StorageWriter> writer,
                   const SaveOptions& options = {});
  PendingSave Save(const StateDict& sd, const std::string& dir, const SaveOptions& options = {});

 private:
  WhenBusy when_busy_;
  std::mutex mu_;
  PendingSave in_flight_;
  std::string in_flight_where_;
  std::thread thread_;
};

// A copy of `sd` whose chunks live in host memory of their own (pinned for CUDA chunks).
StateDict SnapshotToHost(const StateDict& sd);

}  // namespace dcpp
