#include "core/comm/c10d_comm.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/base/error.h"

namespace dcpp {
C10dComm::C10dComm(c10::intrusive_ptr<c10d::ProcessGroup> pg, c10::Device device,
                   std::chrono::milliseconds timeout)
    : C10dComm(pg->getBackend(device.type()), device, timeout) {}

C10dComm::C10dComm(c10::intrusive_ptr<c10d::Backend> backend, c10::Device device,
                   std::chrono::milliseconds timeout)
    : backend_(std::move(backend)), device_(device), timeout_(timeout) {
  DCPP_CHECK(backend_, "C10dComm: no process group");
  rank_ = backend_->getRank();
  size_ = backend_->getSize();
}

C10dComm::~C10dComm() = default;

namespace {

// Runs a c10d collective and waits for it at most `timeout`, turning failures and timeouts
// into dcpp::Error. The error tells the two cases apart, as they call for different actions: no
// answer within the bound (a peer gone silent: its node down, a cut link, or a rank still busy
// elsewhere; the wait took the whole timeout) or a failure before it (a peer that died closes
// its connections, and the message names the address gloo saw close). After one fails the group
// is out of step (a peer is gone, or still inside the failed call), so every later collective
// fails at once, naming the first failure, instead of waiting out another timeout: a save that
// fails in step k does not wait again in k+1.
template <typename F>
void Collective(const char* what, int rank, int size, std::chrono::milliseconds timeout,
                std::string& broken, F&& start) {
  if (!broken.empty()) {
    throw Error(StrCat("collective ", what, " not started on rank ", rank,
                       ": an earlier collective of this group failed: ", broken));
  }
  const auto began = std::chrono::steady_clock::now();
  try {
    c10::intrusive_ptr<c10d::Work> work = start();
    work->wait(timeout);
  } catch (const std::exception& e) {
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - began);
    const double bound_s = timeout.count() / 1000.0;
    // Timers fire a little early or late; 95% of the bound is a timeout, not a failure.
    const bool timed_out = waited.count() * 20 >= timeout.count() * 19;
    const std::string msg =
        timed_out
            ? StrCat("collective ", what, " on rank ", rank, " of ", size,
                     " got no answer within the collective timeout of ", bound_s,
                     " s (DCPP_COLLECTIVE_TIMEOUT_S): a peer is silent (its node down or cut "
                     "off) or still busy elsewhere: ",
                     ErrorMessage(e))
            : StrCat("collective ", what, " failed on rank ", rank, " of ", size, " after ",
                     waited.count() / 1000.0, " s, within the collective timeout of ", bound_s,
                     " s (DCPP_COLLECTIVE_TIMEOUT_S): a peer failed or closed its connection: ",
                     ErrorMessage(e));
    broken = msg;
    throw Error(msg);
  }
}

at::Tensor ToTensor(const std::string& s, int64_t padded, c10::Device device) {
  at::Tensor t = at::zeros({padded}, at::kByte);
  if (!s.empty()) std::memcpy(t.data_ptr(), s.data(), s.size());
  return t.to(device);
}

std::string FromTensor(const at::Tensor& t, int64_t len) {
  const at::Tensor c = t.cpu();
  return std::string(static_cast<const char*>(c.const_data_ptr()), static_cast<size_t>(len));
}

}  // namespace

std::vector<std::string> C10dComm::AllGather(const std::string& mine) {
  std::vector<at::Tensor> in = {at::full({1}, static_cast<int64_t>(mine.size()), at::kLong).to(device_)};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < size_; ++r) out[0].push_back(at::empty({1}, at::kLong).to(device_));
  c10d::AllgatherOptions ao;
  ao.timeout = timeout_;
  Collective("allgather(lengths)", rank_, size_, timeout_, broken_, [&] { return backend_->allgather(out, in, ao); });
  std::vector<int64_t> lens(size_);
  int64_t longest = 1;
  for (int r = 0; r < size_; ++r) longest = std::max(longest, lens[r] = out[0][r].cpu().item<int64_t>());
  std::vector<at::Tensor> pin = {ToTensor(mine, longest, device_)};
  std::vector<std::vector<at::Tensor>> pout(1);
  for (int r = 0; r < size_; ++r) pout[0].push_back(at::empty({longest}, at::kByte).to(device_));
  Collective("allgather", rank_, size_, timeout_, broken_, [&] { return backend_->allgather(pout, pin, ao); });
  std::vector<std::string> result(size_);
  for (int r = 0; r < size_; ++r) result[r] = FromTensor(pout[0][r], lens[r]);
  return result;
}

std::vector<std::string> C10dComm::Gather(const std::string& mine, int root) {
  // Plans are small next to the data; an all-gather keeps every backend (gloo, NCCL) on the
  // same well-supported collective.
  std::vector<std::string> all = AllGather(mine);
  if (rank_ != root) all.clear();
  return all;
}

std::string C10dComm::Broadcast(const std::string& data, int root) {
  std::vector<at::Tensor> len = {at::full({1}, static_cast<int64_t>(data.size()), at::kLong).to(device_)};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = timeout_;
  Collective("broadcast(length)", rank_, size_, timeout_, broken_, [&] { return backend_->broadcast(len, opts); });
  const int64_t n = len[0].cpu().item<int64_t>();
  if (n == 0) return "";
  std::vector<at::Tensor> payload = {ToTensor(rank_ == root ? data : std::string(), n, device_)};
  Collective("broadcast", rank_, size_, timeout_, broken_, [&] { return backend_->broadcast(payload, opts); });
  return FromTensor(payload[0], n);
}

void C10dComm::BroadcastTensor(at::Tensor& t, int root) {
  DCPP_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " outside the group of ", size_);
  if (t.numel() == 0) return;  // same shape everywhere: no rank sends or receives anything
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = timeout_;
  // The backend sees the bytes (uint8), so every dtype travels, whatever the backend supports.
  // (A group made for the current CUDA device may name no index.)
  const bool on_device = t.device().type() == device_.type() &&
                         (!device_.has_index() || t.device().index() == device_.index());
  const bool direct = on_device && t.is_contiguous();
  at::Tensor buf = t;
  if (!direct) {  // a temporary: the root's values, or room for them
    buf = rank_ == root ? t.to(device_).contiguous()
                        : at::empty(t.sizes(), t.options().device(device_));
  }
  std::vector<at::Tensor> payload = {buf.view({-1}).view(at::kByte)};
  Collective("broadcast(tensor)", rank_, size_, timeout_, broken_,
             [&] { return backend_->broadcast(payload, opts); });
  if (!direct && rank_ != root) t.copy_(buf);
}

std::string C10dComm::device_type() const {
  return c10::DeviceTypeName(device_.type(), /*lower_case=*/true);
}

std::string C10dComm::Scatter(const std::vector<std::string>& parts, int root) {
  // Lengths from the root, then one broadcast of all parts; each rank keeps its own. Global
  // plans are scattered once per save, so simplicity wins over the extra bytes.
  std::string packed;
  if (rank_ == root) {
    DCPP_CHECK(static_cast<int>(parts.size()) == size_, "scatter: ", parts.size(), " parts for ", size_, " ranks");
    for (const std::string& p : parts) {
      const uint64_t n = p.size();
      packed.append(reinterpret_cast<const char*>(&n), sizeof(n));
      packed += p;
    }
  }
  packed = Broadcast(packed, root);
  size_t pos = 0;
  for (int r = 0; r < size_; ++r) {
    uint64_t n = 0;
    DCPP_CHECK(pos + sizeof(n) <= packed.size(), "scatter: malformed payload");
    std::memcpy(&n, packed.data() + pos, sizeof(n));
    pos += sizeof(n);
    if (r == rank_) return packed.substr(pos, n);
    pos += n;
  }
  throw Error("scatter: rank outside the group");
}

std::string C10dComm::AllReduceError(const std::string& error) {
  for (const std::string& e : AllGather(error)) {
    if (!e.empty()) return e;
  }
  return "";
}

}  // namespace dcpp
