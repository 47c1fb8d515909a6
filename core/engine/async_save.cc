#include "core/engine/async_save.h"

#include <ATen/ATen.h>

#include <c10/core/StreamGuard.h>

#include <chrono>
#include <map>
#include <thread>

#include "core/engine/staging.h"
#include "core/storage/open.h"

namespace dcpp {

bool PendingSave::done() const {
  return future_.valid() &&
         future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

StateDict SnapshotToHost(const StateDict& sd) {
  StateDict out;
  std::map<c10::DeviceIndex, c10::Stream> streams;  // a copy stream per device
  for (const TensorEntry& e : sd.tensors()) {
    TensorEntry copy{e.fqn, e.dtype, e.shape, {}};
    for (const LocalChunk& c : e.chunks) {
      DCPP_CHECK(c.tensor.defined() && !c.tensor.is_meta(), "key '", e.fqn, "' chunk ",
                 c.box.ToString(), " has no data to save");
      at::Tensor host;
      if (c.tensor.device().is_cpu()) {
        host = c.tensor.clone(at::MemoryFormat::Contiguous);
      } else {
        // Pinned, so that the copy is a real asynchronous DMA, on a copy stream that first
        // waits for the kernels already queued on the current stream.
        auto it = streams.find(c.tensor.device().index());
        if (it == streams.end()) {
          it = streams.emplace(c.tensor.device().index(), CopyStreamAfterCurrent(c.tensor.device())).first;
        }
        host = at::empty(c.tensor.sizes(), at::TensorOptions().dtype(c.tensor.scalar_type()).pinned_memory(true));
        c10::StreamGuard guard(it->second);
        host.copy_(c.tensor, /*non_blocking=*/true);
      }
      copy.chunks.push_back({c.box, host});
    }
    out.Add(std::move(copy));
  }
  // One wait per device for all its copies, instead of one per tensor.
  for (auto& [device, stream] : streams) stream.synchronize();
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
