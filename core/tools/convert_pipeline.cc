#include "core/tools/convert_pipeline.h"

#include <algorithm>
#include <cstring>

#include "core/base/error.h"
#include "core/engine/chunk_io.h"

namespace dcpp::internal {

// The destination's writer thread: hashes and writes each job's pieces in order.
void WriteJobs(Pipeline& pipe, int64_t total, const ConvertOptions& opt, int64_t* written) {
  Job job;
  while (pipe.Pop(&job)) {
    for (const Write& w : job.writes) {
      WriteHashed(*w.out->sink, w.offset, w.data, w.length, &w.out->sum);
      w.out->written += w.length;
      if (w.out->written == w.out->length) w.out->checksum = w.out->sum.Digest();
      *written += w.length;
    }
    pipe.Release(job.slot);
    if (opt.progress) opt.progress(*written, total);
  }
}

void EntryStreamer::Stream(const std::string& key, const proto::TensorMeta& source, std::vector<Output*>& outs) {
  BandReader reader(files_, source, opt_.verify_checksums);
  int64_t extra = 0;  // per row: copies for outputs that are not whole rows
  for (const Output* o : outs) extra += o->whole_rows ? 0 : o->row_bytes;
  const int64_t per_row = reader.row_bytes() + std::max(extra, reader.staging_bytes_per_row());
  if (reader.rows() == 0 || reader.row_bytes() == 0) return;
  DCPP_CHECK(per_row <= pipe_.capacity(), "key '", key, "': one row of dimension 0 needs ",
             per_row, " bytes of buffers, more than half the memory budget (",
             opt_.memory_budget, " bytes); raise the memory budget");
  const int64_t limit = std::max(std::min(pipe_.capacity(), kJobBytes), per_row);
  Box band_box = WholeBox(reader.byte_shape());
  int64_t row = 0;
  while (row < reader.rows()) {
    if (!open_) Start();
    const int64_t fit = (limit - job_.used) / per_row;
    if (fit == 0) {
      Flush();
      continue;
    }
    const int64_t n = std::min(fit, reader.rows() - row);
    uint8_t* band = pipe_.buffer(job_.slot) + job_.used;
    uint8_t* scratch = band + n * reader.row_bytes();
    reader.Read(row, row + n, band, scratch);
    band_box.offsets[0] = row;
    band_box.sizes[0] = n;
    uint8_t* copy = scratch;
    for (Output* o : outs) {
      const int64_t first = o->bytes.offsets[0];
      const int64_t r0 = std::max(row, first), r1 = std::min(row + n, first + o->bytes.sizes[0]);
      if (r0 >= r1 || o->row_bytes == 0) continue;
      const int64_t len = (r1 - r0) * o->row_bytes;
      const uint8_t* data;
      if (o->whole_rows) {
        data = band + (r0 - row) * reader.row_bytes();
      } else {
        Box region = o->bytes;
        region.offsets[0] = r0;
        region.sizes[0] = r1 - r0;
        int64_t pos = 0;
        for (const ByteRun& run : RunsOf(band_box, region, 1)) {
          std::memcpy(copy + pos, band + run.offset, static_cast<size_t>(run.length));
          pos += run.length;
        }
        data = copy;
        copy += len;
      }
      job_.writes.push_back({o, o->file_offset + static_cast<uint64_t>((r0 - first) * o->row_bytes),
                             data, len});
    }
    job_.used += n * per_row;
    row += n;
  }
  bytes_read_ += reader.bytes_read();
  verified_ += reader.verified_chunks();
  if (opt_.verify_checksums) {
    DCPP_CHECK(reader.unverified_chunks() == 0, "key '", key, "': ",
               reader.unverified_chunks(), " source chunk(s) were not verified");
  }
}

}  // namespace dcpp::internal
