// BandReader: streams one saved tensor in bands of rows, whatever chunks it was saved in.
//
// A band is rows [begin, end) of dimension 0 with every other dimension whole, returned as
// contiguous row-major bytes. The tensor is handled as bytes (its last dimension scaled by the
// element size, a 0-d tensor as one row of its bytes), so every dtype moves the same way.
// Chunks that span whole rows are read straight into the band; others are staged and copied.
//
// Reading the bands of a tensor in increasing order reads each saved chunk exactly once,
// front to back, and verifies each chunk's checksum when its last byte has been read. A band
// requested out of order still returns the right bytes but leaves the chunks it touches
// unverified (counted in unverified_chunks()). A bool tensor's bytes are checked as they are
// read, whatever the checksum setting: a byte other than 0 or 1 throws (chunk_io.h CheckBools).
//
// Used by convert (source side) and diff. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/storage/storage.h"

namespace dcpp {

// The byte geometry of a tensor: shape with the last dimension scaled by the element size
// (a 0-d tensor becomes {element size}).
std::vector<int64_t> ByteShape(const std::vector<int64_t>& shape, int64_t elem_size);
Box ByteBox(const Box& box, int64_t elem_size);

// A saved blob seen as a 1-D uint8 tensor of one chunk, so that it streams like a tensor.
proto::TensorMeta BlobAsTensor(const proto::BytesMeta& b);

// Open data files of one checkpoint, shared by the readers of its tensors.
class SourceFiles {
 public:
  explicit SourceFiles(StorageReader& reader) : reader_(reader) {}
  FileSource& Get(const std::string& file);
  StorageReader& reader() { return reader_; }

 private:
  StorageReader& reader_;
  std::map<std::string, std::unique_ptr<FileSource>> open_;
};

class BandReader {
 public:
  // `meta` must outlive the reader. Throws dcpp::Error naming the key if its chunks do not
  // cover the tensor exactly (gaps, or overlaps other than exact duplicates).
  BandReader(SourceFiles& files, const proto::TensorMeta& meta, bool verify_checksums);
  ~BandReader();

  // The tensor's byte geometry (see ByteShape); rows() is its first extent.
  const std::vector<int64_t>& byte_shape() const { return shape_; }
  int64_t rows() const { return shape_[0]; }
  int64_t row_bytes() const { return row_bytes_; }
  // Bytes of staging a band of `rows` rows may need on top of the band itself (for chunks
  // that do not span whole rows).
  int64_t staging_bytes_per_row() const { return staging_per_row_; }

  // Fills `out` ((end - begin) * row_bytes() bytes) with rows [begin, end). `staging` must
  // hold (end - begin) * staging_bytes_per_row() bytes.
  void Read(int64_t begin, int64_t end, uint8_t* out, uint8_t* staging);

  int64_t bytes_read() const { return bytes_read_; }
  int64_t verified_chunks() const { return verified_; }
  int64_t unverified_chunks() const;

 private:
  struct Part;
  void Check(Part& p);

  SourceFiles& files_;
  const proto::TensorMeta& meta_;
  bool verify_;
  bool is_bool_;  // bytes other than 0 and 1 are refused
  std::vector<int64_t> shape_;  // byte shape
  int64_t row_bytes_ = 0;
  int64_t staging_per_row_ = 0;
  std::vector<Part> parts_;  // the chunks read, sorted by first row
  int64_t bytes_read_ = 0;
  int64_t verified_ = 0;
};

}  // namespace dcpp
