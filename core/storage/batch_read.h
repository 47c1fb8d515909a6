// Batched reads of a local file (PosixEnv's FileSource::ReadV). Requests that lie close
// together in the file are read by one preadv(2), straight into their destinations, the small
// gaps between them into a throwaway buffer. The other requests are read one pread(2) each,
// or submitted together through io_uring where the kernel allows it (io_uring_queue_init may
// be refused, e.g. by a seccomp policy or kernel.io_uring_disabled); any io_uring error falls
// back to pread for the requests it left unread.
//
// The mode comes from the environment at each batch, so that a benchmark can compare them in
// one run: DCPP_READ_BATCH=off (FileSource's default ReadV: one pread per merged span, through
// a scratch buffer), preadv, or io_uring. Unset: kDefaultBatchMode.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/storage.h"

namespace dcpp {

enum class BatchMode { kOff, kPreadv, kIoUring };

// preadv for near requests, pread for the others (see bench/README.md, reshard: io_uring
// measured slower on tmpfs).
constexpr BatchMode kDefaultBatchMode = BatchMode::kPreadv;

// DCPP_READ_BATCH's mode (kDefaultBatchMode when unset); throws dcpp::Error on a value it does
// not know.
BatchMode BatchModeFromEnv();

// Whether this thread can use io_uring (its ring is set up on first use, once per thread).
bool IoUringAvailable();

// Reads every request from `fd`, the file `path` of `size` bytes, with `mode` (kOff is taken
// as kPreadv). Throws dcpp::Error naming `path` (a request past the end: the file is
// truncated). Destinations must not overlap.
void ReadBatch(int fd, const std::string& path, uint64_t size, const std::vector<ReadRequest>& requests,
               BatchMode mode);

namespace internal {
// Tests only, for the calling thread: the most bytes one system call or io_uring request may
// ask for (0: no limit), which forces short reads; and a refused io_uring_queue_init.
extern thread_local size_t g_read_call_cap;
extern thread_local bool g_refuse_io_uring;
}  // namespace internal

}  // namespace dcpp
