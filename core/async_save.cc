#include "core/async_save.h"

#include <ATen/ATen.h>

#include <chrono>
#include <thread>

#include "core/storage/open.h"

#ifdef DCPP_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace dcpp {

bool PendingSave::done() const {
  return future_.valid() &&
         future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

StateDict SnapshotToHost(const StateDict& sd) {
  StateDict out;
  bool any_cuda = false;
  for (const TensorEntry& e : sd.tensors()) {
    TensorEntry copy{e.fqn, e.dtype, e.shape, {}};
    for (const LocalChunk& c : e.chunks) {
      DCPP_CHECK(c.tensor.defined() && !c.tensor.is_meta(), "key '", e.fqn, "' chunk ",
                 c.box.ToString(), " has no data to save");
      at::Tensor host;
      if (c.tensor.device().is_cpu()) {
        host = c.tensor.clone(at::MemoryFormat::Contiguous);
      } else {
        // Pinned, so that the copy is a real asynchronous DMA on the tensor's current stream.
        host = at::empty(c.tensor.sizes(), at::TensorOptions().dtype(c.tensor.scalar_type()).pinned_memory(true));
        host.copy_(c.tensor, /*non_blocking=*/true);
        any_cuda = true;
      }
      copy.chunks.push_back({c.box, host});
    }
    out.Add(std::move(copy));
  }
  if (any_cuda) {
#ifdef DCPP_WITH_CUDA
    // One wait for all the copies, instead of one per tensor. (Copies from tensors on several
    // devices each went on that device's current stream.)
    for (c10::DeviceIndex d = 0; d < c10::cuda::device_count(); ++d) {
      c10::cuda::getCurrentCUDAStream(d).synchronize();
    }
#else
    throw Error("SnapshotToHost: CUDA tensors need the CUDA build (--config=cuda)");
#endif
  }
  for (const BytesEntry& b : sd.bytes()) out.Add(BytesEntry{b.fqn, b.data});
  return out;
}

AsyncSaver::~AsyncSaver() {
  if (thread_.joinable()) thread_.join();
}

PendingSave AsyncSaver::Save(const StateDict& sd, std::unique_ptr<StorageWriter> writer,
                             const SaveOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  if (in_flight_.valid() && !in_flight_.done()) {
    DCPP_CHECK(when_busy_ == WhenBusy::kWait, "async_save to ", writer->Describe(),
               ": the async save to ", in_flight_where_, " is still in flight (AsyncSaver "
               "refuses a second one; wait() for it first)");
  }
  if (thread_.joinable()) thread_.join();  // saves run one after the other, never interleaved

  auto snapshot = std::make_shared<StateDict>(SnapshotToHost(sd));
  auto promise = std::make_shared<std::promise<SaveStats>>();
  in_flight_ = PendingSave(promise->get_future().share());
  in_flight_where_ = writer->Describe();
  std::shared_ptr<StorageWriter> w(std::move(writer));
  thread_ = std::thread([snapshot, promise, w, options] {
    try {
      promise->set_value(save(*snapshot, *w, options));
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  return in_flight_;
}

PendingSave AsyncSaver::Save(const StateDict& sd, const std::string& dir, const SaveOptions& options) {
  return Save(sd, OpenWriter(dir, options.format), options);
}

}  // namespace dcpp
