#include "core/engine/band_reader.h"

#include <algorithm>
#include <cstring>

#include "core/base/error.h"
#include "core/engine/chunk_io.h"
#include "core/format/checksum.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"

namespace dcpp {
namespace {

int64_t Product(const std::vector<int64_t>& v, size_t from) {
  int64_t n = 1;
  for (size_t d = from; d < v.size(); ++d) n *= v[d];
  return n;
}

}  // namespace

std::vector<int64_t> ByteShape(const std::vector<int64_t>& shape, int64_t elem_size) {
  if (shape.empty()) return {elem_size};
  std::vector<int64_t> s = shape;
  s.back() *= elem_size;
  return s;
}

Box ByteBox(const Box& box, int64_t elem_size) {
  if (box.sizes.empty()) return Box{{0}, {elem_size}};
  Box b = box;
  b.offsets.back() *= elem_size;
  b.sizes.back() *= elem_size;
  return b;
}

proto::TensorMeta BlobAsTensor(const proto::BytesMeta& b) {
  proto::TensorMeta t;
  t.set_fqn(b.fqn());
  t.set_dtype("uint8");
  t.add_shape(static_cast<int64_t>(b.length()));
  proto::ChunkMeta* c = t.add_chunks();
  c->add_offsets(0);
  c->add_sizes(static_cast<int64_t>(b.length()));
  c->set_file(b.file());
  c->set_offset(b.offset());
  c->set_length(b.length());
  c->set_checksum(b.checksum());
  return t;
}

FileSource& SourceFiles::Get(const std::string& file) {
  auto& s = open_[file];
  if (!s) s = reader_.Open(file);
  return *s;
}

struct BandReader::Part {
  const proto::ChunkMeta* chunk = nullptr;
  Box box;                 // byte coordinates
  int64_t row_bytes = 0;   // bytes of one row of the chunk
  bool whole_rows = false; // spans every dimension but the first entirely
  int64_t next_row = 0;    // rows hashed so far, in order
  bool in_order = true;
  bool verified = false;
  std::unique_ptr<Checksum> sum;
};

BandReader::BandReader(SourceFiles& files, const proto::TensorMeta& meta, bool verify_checksums)
    : files_(files), meta_(meta), verify_(verify_checksums), is_bool_(meta.dtype() == "bool") {
  const int64_t es = ElementSize(DtypeFromName(meta.dtype()));
  shape_ = ByteShape({meta.shape().begin(), meta.shape().end()}, es);
  row_bytes_ = Product(shape_, 1);
  const Box whole = WholeBox(shape_);

  std::vector<Box> seen;
  int64_t covered = 0;
  for (const auto& c : meta.chunks()) {
    Part p;
    p.chunk = &c;
    p.box = ByteBox(ChunkBox(c), es);
    if (p.box.empty()) continue;
    if (std::find(seen.begin(), seen.end(), p.box) != seen.end()) continue;  // a duplicate
    seen.push_back(p.box);
    p.row_bytes = Product(p.box.sizes, 1);
    p.whole_rows = p.row_bytes == row_bytes_;
    if (!p.whole_rows) staging_per_row_ += p.row_bytes;
    covered += p.box.numel();
    parts_.push_back(std::move(p));
  }
  std::sort(parts_.begin(), parts_.end(),
            [](const Part& a, const Part& b) { return a.box.offsets < b.box.offsets; });
  // Exact cover: pairwise disjoint and as many bytes as the tensor. Sweeping by first row
  // compares only chunks whose row ranges meet.
  bool disjoint = true;
  for (size_t i = 0; i < parts_.size() && disjoint; ++i) {
    const int64_t end = parts_[i].box.offsets[0] + parts_[i].box.sizes[0];
    for (size_t j = i + 1; j < parts_.size() && parts_[j].box.offsets[0] < end; ++j) {
      if (Intersect(parts_[i].box, parts_[j].box)) {
        disjoint = false;
        break;
      }
    }
  }
  DCPP_CHECK(disjoint && covered == whole.numel(), "key '", meta.fqn(), "' in ",
             files.reader().Describe(), ": its chunks ",
             disjoint ? "leave gaps in the tensor" : "overlap (other than exact duplicates)",
             "; run `verify` on the checkpoint for details");
}

BandReader::~BandReader() = default;

int64_t BandReader::unverified_chunks() const {
  int64_t n = 0;
  for (const Part& p : parts_) n += p.verified ? 0 : 1;
  return n;
}

void BandReader::Check(Part& p) {
  CheckChunkChecksum(p.sum->Digest(), files_.reader(), meta_.fqn(), *p.chunk);
  p.verified = true;
  p.sum.reset();
  ++verified_;
}

void BandReader::Read(int64_t begin, int64_t end, uint8_t* out, uint8_t* staging) {
  Box band = WholeBox(shape_);
  band.offsets[0] = begin;
  band.sizes[0] = end - begin;
  for (Part& p : parts_) {
    const int64_t first = p.box.offsets[0], last = first + p.box.sizes[0];
    if (first >= end) break;
    const int64_t r0 = std::max(begin, first), r1 = std::min(end, last);
    if (r0 >= r1) continue;
    const int64_t len = (r1 - r0) * p.row_bytes;
    uint8_t* dst = p.whole_rows ? out + (r0 - begin) * row_bytes_ : staging;
    const uint64_t file_off = p.chunk->offset() + static_cast<uint64_t>((r0 - first) * p.row_bytes);
    FileSource& src = files_.Get(p.chunk->file());
    const bool hash = verify_ && p.in_order && r0 - first == p.next_row;
    if (verify_ && !hash) p.in_order = false;
    if (hash && !p.sum) p.sum = std::make_unique<Checksum>();
    ReadHashed(src, file_off, dst, len, hash ? p.sum.get() : nullptr);
    bytes_read_ += len;
    if (is_bool_) {  // a byte other than 0 or 1 is refused, whatever `verify_` (chunk_io.h)
      Box rows = ChunkBox(*p.chunk);  // one byte per element: the band's rows of it, row-major
      if (!rows.sizes.empty()) {
        rows.offsets[0] = r0;
        rows.sizes[0] = r1 - r0;
      }
      CheckBools(dst, rows, files_.reader(), meta_.fqn(), *p.chunk);
    }
    if (hash) {
      p.next_row = r1 - first;
      if (r1 == last) Check(p);
    }
    if (!p.whole_rows) {
      // Scatter the staged rows into their columns of the band.
      Box region = p.box;
      region.offsets[0] = r0;
      region.sizes[0] = r1 - r0;
      int64_t pos = 0;
      for (const ByteRun& run : RunsOf(band, region, 1)) {
        std::memcpy(out + run.offset, staging + pos, static_cast<size_t>(run.length));
        pos += run.length;
      }
      staging += len;
    }
  }
}

}  // namespace dcpp
