// Batched reads of a local file (PosixEnv's FileSource::ReadV). Requests that lie close
// together in the file are read by one preadv(2), straight into their destinations, the small
// gaps between them into a throwaway buffer. The other requests are read one pread(2) each,
// or submitted together through io_uring where the kernel allows it (io_uring_queue_init may
// be refused, e.g. by a seccomp policy or kernel.io_uring_disabled); any io_uring error falls
// back to pread for the requests it left unread.
//
// The mode comes from the environment at each batch, so that a benchmark can compare them in
// one run: DCPP_READ_BATCH=off (FileSource's default ReadV: one pread per merged span, through
// a scratch buffer), preadv (preadv and pread only), io_uring, or auto (the default).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/storage.h"

namespace dcpp {

enum class BatchMode { kOff, kPreadv, kIoUring, kAuto };

// DCPP_READ_BATCH's mode (kAuto when unset); throws dcpp::Error on a value it does not know.
BatchMode BatchModeFromEnv();

// What kAuto means for the file open as `fd`: kPreadv on a file in memory (tmpfs, ramfs),
// where io_uring hands every read to a worker thread and costs twice pread's CPU time per
// 4 KiB read (measured, bench/README.md), kIoUring elsewhere (a disk: many reads in flight
// at once, several times faster than one pread after another on a cold cache).
BatchMode AutoBatchMode(int fd);

// Whether this thread can use io_uring (its ring is set up on first use, once per thread).
bool IoUringAvailable();

// Reads exactly `length` bytes at `offset` of `fd` (the file `path`) into `data`, retrying
// short reads and EINTR; throws dcpp::Error naming `path` on an error or an early end of file.
void PreadExactly(int fd, const std::string& path, uint64_t offset, void* data, size_t length);

// Reads every request from `fd`, the file `path` of `size` bytes, with `mode` (kOff is taken
// as kPreadv, kAuto asks AutoBatchMode). Throws dcpp::Error naming `path` (a request past
// the end: the file is truncated). Destinations must not overlap.
void ReadBatch(int fd, const std::string& path, uint64_t size, const std::vector<ReadRequest>& requests,
               BatchMode mode);

namespace internal {
// Tests only, for the calling thread: the most bytes one system call or io_uring request may
// ask for (0: no limit), which forces short reads; and a refused io_uring_queue_init.
extern thread_local size_t g_read_call_cap;
extern thread_local bool g_refuse_io_uring;
}  // namespace internal

}  // namespace dcpp
