#include "core/storage/batch_read.h"

#include <liburing.h>
#include <linux/magic.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "core/base/error.h"

namespace dcpp {

namespace internal {
thread_local size_t g_read_call_cap = 0;
thread_local bool g_refuse_io_uring = false;
}  // namespace internal

namespace {

using internal::g_read_call_cap;

constexpr unsigned kRingEntries = 256;  // cold disk, 4 KiB reads: 256 in flight ~15 us each, 64 ~19 us
constexpr size_t kMaxIov = IOV_MAX < 1024 ? IOV_MAX : 1024;
// io_uring's read length is 32 bits and its result an int: larger requests go by pread.
constexpr size_t kMaxRingRead = size_t{1} << 30;

std::string Errno(int err) { return std::strerror(err); }

size_t Capped(size_t n) { return g_read_call_cap > 0 ? std::min(n, g_read_call_cap) : n; }

}  // namespace

void PreadExactly(int fd, const std::string& path, uint64_t offset, void* data, size_t length) {
  char* p = static_cast<char*>(data);
  while (length > 0) {
    const ssize_t n = ::pread(fd, p, Capped(length), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    DCPP_CHECK(n > 0, "read ", path, " at offset ", offset, ": ",
               n < 0 ? Errno(errno) : std::string("unexpected end of file (truncated)"));
    p += n;
    offset += static_cast<uint64_t>(n);
    length -= static_cast<size_t>(n);
  }
}

namespace {

// Reads the file range [offset, offset + sum of lengths) into `iov`, retrying short reads and
// EINTR. Changes `iov`.
void PreadvExactly(int fd, const std::string& path, uint64_t offset, std::vector<iovec>& iov) {
  size_t first = 0;
  while (first < iov.size()) {
    int count = static_cast<int>(iov.size() - first);
    iovec saved{};
    size_t trimmed = iov.size();
    if (g_read_call_cap > 0) {  // tests: ask for at most the cap, ending inside an iovec
      size_t bytes = 0;
      for (size_t k = first; k < iov.size(); ++k) {
        if (bytes + iov[k].iov_len >= g_read_call_cap) {
          saved = iov[k];
          trimmed = k;
          iov[k].iov_len = g_read_call_cap - bytes;
          count = static_cast<int>(k - first + 1);
          break;
        }
        bytes += iov[k].iov_len;
      }
    }
    const ssize_t n = ::preadv(fd, iov.data() + first, count, static_cast<off_t>(offset));
    const int err = errno;
    if (trimmed < iov.size()) iov[trimmed] = saved;
    if (n < 0 && err == EINTR) continue;
    DCPP_CHECK(n > 0, "read ", path, " at offset ", offset, ": ",
               n < 0 ? Errno(err) : std::string("unexpected end of file (truncated)"));
    offset += static_cast<uint64_t>(n);
    size_t left = static_cast<size_t>(n);
    while (left > 0 && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (left > 0) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
    while (first < iov.size() && iov[first].iov_len == 0) ++first;
  }
}

// This thread's io_uring, set up on first use; `ok` false where the kernel refused it or after
// an error of the ring itself.
struct Ring {
  io_uring ring{};
  bool tried = false;
  bool ok = false;
  ~Ring() { Close(); }
  pid_t owner = 0;  // a child forked after set-up shares the ring's memory: it sets up its own
  bool Usable() {
    if (internal::g_refuse_io_uring) return false;
    if (tried && ok && owner != ::getpid()) {
      Close();  // the child's copies of the mapping and descriptor only
      tried = false;
    }
    if (!tried) {
      tried = true;
      ok = io_uring_queue_init(kRingEntries, &ring, 0) == 0;
      owner = ::getpid();
    }
    return ok;
  }
  void Close() {
    if (ok) io_uring_queue_exit(&ring);
    ok = false;
  }
};

Ring& ThisThreadRing() {
  thread_local Ring ring;
  return ring;
}

// Reads `reqs` through this thread's ring, kRingEntries at a time. A request the ring did not
// read in full (a short read, an error of the request or of the ring) is finished with pread,
// which retries or throws naming the file; after an error of the ring itself, the ring is
// closed and the rest goes by pread.
void ReadByRing(int fd, const std::string& path, const std::vector<const ReadRequest*>& reqs) {
  Ring& r = ThisThreadRing();
  std::vector<size_t> done(reqs.size(), 0);  // bytes read by the ring
  size_t next = 0;
  while (next < reqs.size() && r.ok) {
    const size_t batch = std::min<size_t>(kRingEntries, reqs.size() - next);
    size_t queued = 0;
    for (; queued < batch; ++queued) {
      io_uring_sqe* sqe = io_uring_get_sqe(&r.ring);
      if (sqe == nullptr) break;
      const ReadRequest& q = *reqs[next + queued];
      io_uring_prep_read(sqe, fd, q.data, static_cast<unsigned>(Capped(q.length)), q.offset);
      io_uring_sqe_set_data64(sqe, next + queued);
    }
    if (queued == 0) break;  // no room in the ring (cannot happen: every batch is reaped)
    size_t submitted = 0;
    bool broken = false;
    while (submitted < queued) {
      const int rc = io_uring_submit(&r.ring);
      if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) continue;
      if (rc <= 0) {
        broken = true;  // the queued requests the kernel did not take are dropped with the ring
        break;
      }
      submitted += static_cast<size_t>(rc);
    }
    for (size_t reaped = 0; reaped < submitted;) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe(&r.ring, &cqe);
      if (rc == -EINTR || rc == -EAGAIN || rc == -ETIME) continue;
      DCPP_CHECK(rc == 0, "read ", path, ": io_uring wait failed: ", Errno(-rc));
      const size_t i = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
      if (cqe->res > 0) done[i] = static_cast<size_t>(cqe->res);
      io_uring_cqe_seen(&r.ring, cqe);
      ++reaped;
    }
    next += submitted;
    if (broken) r.Close();
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    const ReadRequest& q = *reqs[i];
    if (done[i] < q.length) {
      PreadExactly(fd, path, q.offset + done[i], static_cast<char*>(q.data) + done[i], q.length - done[i]);
    }
  }
}

}  // namespace

BatchMode BatchModeFromEnv() {
  const char* v = std::getenv("DCPP_READ_BATCH");
  if (v == nullptr || *v == '\0') return BatchMode::kAuto;
  const std::string s = v;
  if (s == "auto") return BatchMode::kAuto;
  if (s == "off" || s == "0") return BatchMode::kOff;
  if (s == "preadv") return BatchMode::kPreadv;
  if (s == "io_uring") return BatchMode::kIoUring;
  throw Error(StrCat("DCPP_READ_BATCH=", s, " is not one of off, preadv, io_uring, auto"));
}

BatchMode AutoBatchMode(int fd) {
  struct statfs fs;
  if (::fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC)) return BatchMode::kPreadv;
  return BatchMode::kIoUring;
}

bool IoUringAvailable() { return ThisThreadRing().Usable(); }

void ReadBatch(int fd, const std::string& path, uint64_t size, const std::vector<ReadRequest>& requests,
               BatchMode mode) {
  if (mode == BatchMode::kAuto) mode = AutoBatchMode(fd);
  std::vector<const ReadRequest*> order;
  order.reserve(requests.size());
  for (const ReadRequest& q : requests) {
    DCPP_CHECK(q.offset <= size && q.length <= size - q.offset, path, " is truncated: need bytes [", q.offset,
               ", ", q.offset + q.length, ") but the file has ", size);
    if (q.length > 0) order.push_back(&q);
  }
  auto by_offset = [](const ReadRequest* a, const ReadRequest* b) { return a->offset < b->offset; };
  if (!std::is_sorted(order.begin(), order.end(), by_offset)) std::stable_sort(order.begin(), order.end(), by_offset);

  // Runs of requests with small gaps: one preadv each, gaps into `gap` (its bytes are dropped,
  // so every gap may share it).
  thread_local char gap[kReadGapBytes];
  std::vector<const ReadRequest*> scattered;  // alone in their span
  std::vector<iovec> iov;
  size_t i = 0;
  while (i < order.size()) {
    uint64_t end = order[i]->offset + order[i]->length;
    size_t j = i + 1;
    size_t iovs = 1;
    while (j < order.size() && MergesReads(order[i]->offset, end, order[j]->offset, order[j]->offset + order[j]->length) &&
           iovs + 2 <= kMaxIov) {
      iovs += order[j]->offset > end ? 2 : 1;
      end = order[j]->offset + order[j]->length;
      ++j;
    }
    if (j == i + 1) {
      scattered.push_back(order[i]);
    } else {
      iov.clear();
      uint64_t pos = order[i]->offset;
      for (size_t k = i; k < j; ++k) {
        if (order[k]->offset > pos) iov.push_back({gap, static_cast<size_t>(order[k]->offset - pos)});
        iov.push_back({order[k]->data, order[k]->length});
        pos = order[k]->offset + order[k]->length;
      }
      PreadvExactly(fd, path, order[i]->offset, iov);
    }
    i = j;
  }

  if (mode == BatchMode::kIoUring && scattered.size() > 1 && IoUringAvailable()) {
    // The ring takes requests it can size; the rest go by pread.
    std::vector<const ReadRequest*> ring_reqs;
    for (const ReadRequest* q : scattered) {
      if (q->length <= kMaxRingRead) {
        ring_reqs.push_back(q);
      } else {
        PreadExactly(fd, path, q->offset, q->data, q->length);
      }
    }
    ReadByRing(fd, path, ring_reqs);
    return;
  }
  for (const ReadRequest* q : scattered) PreadExactly(fd, path, q->offset, q->data, q->length);
}

}  // namespace dcpp
