// The streaming pipeline of convert(): one thread reads each source tensor band by band
// (BandReader) and cuts the bands into the destination's chunks; a writer thread hashes and
// writes them (chunk_io.h). Two buffers of half the memory budget each pass between them, so
// reading and writing overlap and the budget is the ceiling on what is buffered.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/engine/band_reader.h"
#include "core/format/checksum.h"
#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/storage/storage.h"
#include "core/tools/convert.h"

namespace dcpp::internal {

// A job (the bands handed to the writer at once) stops growing at this size even when the
// budget allows more, so that its bytes are still in cache when they are hashed and written.
// The budget stays the ceiling: one row larger than this gets a job of its own.
constexpr int64_t kJobBytes = 8 << 20;

// One target chunk (or blob) of the destination.
struct Output {
  size_t entry = 0;
  int rank = 0;
  Box box;               // element coordinates (blobs: [0:length])
  Box bytes;             // byte coordinates
  int64_t row_bytes = 0; // bytes of one row of the chunk
  bool whole_rows = false;
  FileSink* sink = nullptr;
  std::string file;
  uint64_t file_offset = 0;
  int64_t length = 0;
  int64_t written = 0;
  Checksum sum;
  uint64_t checksum = 0;
};

struct Write {
  Output* out;
  uint64_t offset;
  const uint8_t* data;
  int64_t length;
};

struct Job {
  int slot = 0;
  int64_t used = 0;
  std::vector<Write> writes;
};

// Two buffers of `capacity` bytes: the reader fills one while the writer drains the other.
// A failure on either side stops both (Pop returns false, Acquire and Submit throw).
class Pipeline {
 public:
  explicit Pipeline(int64_t capacity) : capacity_(capacity) {
    for (auto& b : buffers_) b.reset(new uint8_t[static_cast<size_t>(capacity)]);
  }
  int64_t capacity() const { return capacity_; }
  uint8_t* buffer(int slot) { return buffers_[slot].get(); }

  int Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return failed_ || !busy_[0] || !busy_[1]; });
    if (failed_) throw Stopped();
    const int s = busy_[0] ? 1 : 0;
    busy_[s] = true;
    return s;
  }
  void Submit(Job job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) throw Stopped();
    in_use_ = std::max(in_use_, job.used + used_by_writer_);
    queue_.push_back(std::move(job));
    cv_.notify_all();
  }
  void Release(int slot) {
    std::lock_guard<std::mutex> lock(mu_);
    busy_[slot] = false;
    used_by_writer_ = 0;
    cv_.notify_all();
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  void Fail() {
    std::lock_guard<std::mutex> lock(mu_);
    failed_ = true;
    cv_.notify_all();
  }
  bool Pop(Job* job) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return failed_ || closed_ || !queue_.empty(); });
    if (failed_ || queue_.empty()) return false;
    *job = std::move(queue_.front());
    queue_.pop_front();
    used_by_writer_ = job->used;
    return true;
  }
  int64_t peak() const { return in_use_; }

  struct Stopped : std::exception {};

 private:
  int64_t capacity_;
  std::unique_ptr<uint8_t[]> buffers_[2];
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool busy_[2] = {false, false};
  bool closed_ = false, failed_ = false;
  int64_t used_by_writer_ = 0, in_use_ = 0;
};

// The destination's writer thread: hashes (when `hash`: the destination keeps chunk checksums)
// and writes each job's pieces in order.
void WriteJobs(Pipeline& pipe, int64_t total, const ConvertOptions& opt, bool hash, int64_t* written);

// Streams one entry's source through the pipeline into its outputs, band by band.
class EntryStreamer {
 public:
  EntryStreamer(Pipeline& pipe, SourceFiles& files, const ConvertOptions& opt)
      : pipe_(pipe), files_(files), opt_(opt) {}

  // `dtype` is the name of the dtype the outputs hold: the source's, or one it is cast to
  // band by band (dtype_cast.h), the outputs' byte coordinates being in that dtype.
  void Stream(const std::string& key, const proto::TensorMeta& source, const std::string& dtype,
              std::vector<Output*>& outs);

  void Flush() {
    if (!open_) return;
    open_ = false;
    pipe_.Submit(std::move(job_));
  }
  int64_t bytes_read() const { return bytes_read_; }
  int64_t verified() const { return verified_; }

 private:
  void Start() {
    job_ = Job{};
    job_.slot = pipe_.Acquire();
    open_ = true;
  }

  Pipeline& pipe_;
  SourceFiles& files_;
  const ConvertOptions& opt_;
  Job job_;
  bool open_ = false;
  int64_t bytes_read_ = 0, verified_ = 0;
};

}  // namespace dcpp::internal
