#include "core/tools/convert_pipeline.h"

#include <algorithm>
#include <cstring>

#include "core/base/error.h"
#include "core/engine/chunk_io.h"
#include "core/model/dtype.h"
#include "core/tools/dtype_cast.h"

namespace dcpp::internal {

void WriteJobs(Pipeline& pipe, int64_t total, const ConvertOptions& opt, bool hash, int64_t* written) {
  Job job;
  while (pipe.Pop(&job)) {
    for (const Write& w : job.writes) {
      WriteHashed(*w.out->sink, w.offset, w.data, w.length, hash ? &w.out->sum : nullptr);
      w.out->written += w.length;
      if (hash && w.out->written == w.out->length) w.out->checksum = w.out->sum.Digest();
      *written += w.length;
    }
    pipe.Release(job.slot);
    if (opt.progress) opt.progress(*written, total);
  }
}

void EntryStreamer::Stream(const std::string& key, const proto::TensorMeta& source, const std::string& dtype,
                           std::vector<Output*>& outs) {
  BandReader reader(files_, source, opt_.verify_checksums);
  if (reader.rows() == 0 || reader.row_bytes() == 0) return;
  // The outputs' byte geometry is that of `dtype`. When it differs from the source's, each
  // band read is cast into a band of the outputs' rows placed after it. Rows of a 1-D (or 0-d)
  // tensor are bytes, so bands then go by whole elements (CastRows).
  const CastRows geo(DtypeFromName(source.dtype()), DtypeFromName(dtype), reader.byte_shape());
  const bool cast = geo.cast;
  const int64_t unit = geo.unit, out_unit = geo.out_unit, out_row_bytes = geo.out_row_bytes;
  int64_t extra = 0;  // per output row: copies for outputs that are not whole rows
  for (const Output* o : outs) extra += o->whole_rows ? 0 : o->row_bytes;
  // Buffer bytes per step of `unit` source rows: the band read, the cast band, the copies (or
  // the reader's staging, which is done with before the copies start).
  const int64_t per_step = unit * reader.row_bytes() + (cast ? out_unit * out_row_bytes : 0) +
                           std::max(out_unit * extra, unit * reader.staging_bytes_per_row());
  DCPP_CHECK(per_step <= pipe_.capacity(), "key '", key, "': one row of dimension 0 needs ",
             per_step, " bytes of buffers, more than half the memory budget (",
             opt_.memory_budget, " bytes); raise the memory budget");
  const int64_t limit = std::max(std::min(pipe_.capacity(), kJobBytes), per_step);
  std::vector<int64_t> shape(source.shape().begin(), source.shape().end());
  Box band_box = WholeBox(ByteShape(shape, ElementSize(geo.to)));
  int64_t row = 0;
  while (row < reader.rows()) {
    if (!open_) Start();
    const int64_t fit = (limit - job_.used) / per_step;
    if (fit == 0) {
      Flush();
      continue;
    }
    const int64_t n = std::min(fit * unit, reader.rows() - row);
    uint8_t* band = pipe_.buffer(job_.slot) + job_.used;
    uint8_t* scratch = band + n * reader.row_bytes();
    reader.Read(row, row + n, band, scratch);
    const int64_t orow = geo.OutRows(row), on = geo.OutRows(n);
    if (cast) {  // the outputs take the cast rows; the copies go after them
      CastElements(band, geo.from, scratch, geo.to, n * reader.row_bytes() / ElementSize(geo.from));
      band = scratch;
      scratch += on * out_row_bytes;
    }
    band_box.offsets[0] = orow;
    band_box.sizes[0] = on;
    uint8_t* copy = scratch;
    for (Output* o : outs) {
      const int64_t first = o->bytes.offsets[0];
      const int64_t r0 = std::max(orow, first), r1 = std::min(orow + on, first + o->bytes.sizes[0]);
      if (r0 >= r1 || o->row_bytes == 0) continue;
      const int64_t len = (r1 - r0) * o->row_bytes;
      const uint8_t* data;
      if (o->whole_rows) {
        data = band + (r0 - orow) * out_row_bytes;
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
    job_.used += n / unit * per_step;
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
