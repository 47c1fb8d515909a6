#include "core/engine/staging.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <optional>

#include "core/base/error.h"

namespace dcpp {

c10::Stream CopyStreamAfterCurrent(c10::Device device) {
  c10::impl::VirtualGuardImpl impl(device.type());
  const c10::Stream stream = impl.getStreamFromGlobalPool(device, /*isHighPriority=*/false);
  c10::Event ready(device.type());
  ready.record(impl.getStream(device));
  ready.block(stream);
  return stream;
}

struct StagingRing::Slot {
  at::Tensor host;                  // uint8, block_bytes_ (or one larger element)
  bool pinned = false;
  bool busy = false;
  std::optional<c10::Event> event;  // recorded after the slot's copies (CUDA only)
  bool await_event = false;
  std::function<void()> then;       // runs once the copies are done
};

StagingRing::StagingRing(int64_t pool_bytes, int buffers) {
  DCPP_CHECK(buffers >= 2, "staging_buffers must be at least 2 (double buffering), got ", buffers);
  DCPP_CHECK(pool_bytes >= buffers, "staging_bytes (", pool_bytes, ") is too small for ", buffers,
             " buffers");
  // Whole 4 KiB pages per buffer, so that blocks keep storage reads and writes aligned.
  block_bytes_ = std::max<int64_t>(pool_bytes / buffers / 4096 * 4096, std::min<int64_t>(pool_bytes / buffers, 4096));
  for (int i = 0; i < buffers; ++i) slots_.push_back(std::make_unique<Slot>());
}

StagingRing::~StagingRing() {
  // Copies still in flight must finish before their buffers go back to the allocator.
  for (int s : busy_) {
    Slot& slot = *slots_[s];
    if (slot.await_event) {
      try {
        slot.event->synchronize();
      } catch (...) {  // the device failed; nothing more to wait for
      }
    }
  }
}

int StagingRing::Take(int64_t bytes, bool pinned) {
  auto free_slot = std::find_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s->busy; });
  if (free_slot == slots_.end()) {
    Retire(busy_.front());
    free_slot = std::find_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s->busy; });
  }
  Slot& slot = **free_slot;
  // A block is at most block_bytes_, except a single element larger than a buffer.
  const int64_t want = std::max(bytes, block_bytes_);
  if (!slot.host.defined() || slot.host.numel() < bytes || (pinned && !slot.pinned)) {
    if (slot.host.defined()) host_bytes_ -= slot.host.numel();
    slot.host = at::Tensor();
    slot.host = at::empty({want}, at::TensorOptions().dtype(at::kByte).pinned_memory(pinned));
    slot.pinned = pinned;
    host_bytes_ += want;
  }
  slot.busy = true;
  staged_bytes_ += bytes;
  return static_cast<int>(free_slot - slots_.begin());
}

void StagingRing::Retire(int s) {
  Slot& slot = *slots_[s];
  busy_.erase(std::find(busy_.begin(), busy_.end(), s));
  std::function<void()> then = std::move(slot.then);
  slot.then = nullptr;
  const bool await = slot.await_event;
  slot.await_event = false;
  slot.busy = false;  // released before `then` runs, so a throwing callback leaks nothing
  if (await) slot.event->synchronize();
  if (then) then();
}

void StagingRing::Release(int s, bool cuda, c10::Device device, std::function<void()> then) {
  Slot& slot = *slots_[s];
  if (cuda) {
    if (!slot.event || slot.event->device_index() != device.index()) {
      slot.event.emplace(c10::DeviceType::CUDA);
    }
    slot.event->record(CopyStream(device));
    slot.await_event = true;
  }
  slot.then = std::move(then);
  busy_.push_back(s);
  if (!cuda) Retire(s);  // CPU copies are already done
}

c10::Stream StagingRing::CopyStream(c10::Device device) {
  auto it = streams_.find(device.index());
  if (it == streams_.end()) it = streams_.emplace(device.index(), CopyStreamAfterCurrent(device)).first;
  return it->second;
}

void StagingRing::ToHost(const at::Tensor& src,
                         std::function<void(const uint8_t* data, int64_t n)> ready) {
  const int64_t n = src.numel() * static_cast<int64_t>(src.element_size());
  const bool cuda = src.is_cuda();
  const int s = Take(n, cuda);
  at::Tensor dst = View({s, slots_[s]->host.data_ptr<uint8_t>(), n}, 0, src.scalar_type(), src.sizes());
  if (cuda) {
    c10::StreamGuard guard(CopyStream(src.device()));
    dst.copy_(src, /*non_blocking=*/true);
  } else {
    dst.copy_(src);
  }
  const uint8_t* data = slots_[s]->host.data_ptr<uint8_t>();
  Release(s, cuda, src.device(), [ready = std::move(ready), data, n] { ready(data, n); });
}

StagingRing::Buffer StagingRing::Acquire(int64_t bytes, bool pinned) {
  const int s = Take(bytes, pinned);
  return {s, slots_[s]->host.data_ptr<uint8_t>(), bytes};
}

at::Tensor StagingRing::View(const Buffer& buf, int64_t offset, c10::ScalarType dtype,
                             at::IntArrayRef sizes) {
  const int64_t es = static_cast<int64_t>(c10::elementSize(dtype));
  int64_t numel = 1;
  for (int64_t d : sizes) numel *= d;
  DCPP_CHECK(offset >= 0 && offset + numel * es <= slots_[buf.slot]->host.numel(),
             "staging view out of its buffer");
  // A view of the slot's own tensor, so that a pinned buffer stays recognisably pinned.
  return slots_[buf.slot]->host.narrow(0, offset, numel * es).view(dtype).view(sizes);
}

void StagingRing::Scatter(const Buffer& buf,
                          const std::vector<std::pair<at::Tensor, at::Tensor>>& copies) {
  std::optional<c10::Device> cuda;
  for (const auto& [dst, src] : copies) {
    if (dst.is_cuda()) {
      DCPP_CHECK(!cuda || *cuda == dst.device(), "one staging buffer feeds targets on ",
                 cuda->str(), " and ", dst.device().str());
      cuda = dst.device();
      c10::StreamGuard guard(CopyStream(dst.device()));
      dst.copy_(src, /*non_blocking=*/true);
    } else {
      dst.copy_(src);
    }
  }
  Release(buf.slot, cuda.has_value(), cuda.value_or(c10::Device(c10::kCPU)), nullptr);
}

void StagingRing::Drain() {
  while (!busy_.empty()) Retire(busy_.front());
}

}  // namespace dcpp
