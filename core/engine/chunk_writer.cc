#include "core/engine/chunk_writer.h"

#include <exception>
#include <memory>
#include <vector>

#include "core/base/error.h"
#include "core/engine/chunk_io.h"
#include "core/engine/engine_util.h"
#include "core/format/checksum.h"
#include "core/model/box.h"

namespace dcpp::internal {

uint64_t ChunkWriter::WriteBytes(FileSink& sink, uint64_t offset, const std::string& data) {
  Checksum sum;
  WriteHashed(sink, offset, data.data(), static_cast<int64_t>(data.size()), hash_ ? &sum : nullptr);
  return hash_ ? sum.Digest() : 0;
}

void ChunkWriter::Write(FileSink& sink, uint64_t offset, const at::Tensor& t, const std::string& what,
           std::function<void(uint64_t)> done) {
  const int64_t es = static_cast<int64_t>(t.element_size());
  const int64_t nbytes = t.numel() * es;
  if (nbytes == 0) return done(hash_ ? Checksum::Of(nullptr, 0) : 0);
  if (t.device().is_cpu() && t.is_contiguous()) {
    // Each block is hashed right after it is written, while it is in cache (chunk_io.h).
    Checksum sum;
    try {
      WriteHashed(sink, offset, t.const_data_ptr(), nbytes, hash_ ? &sum : nullptr);
    } catch (const std::exception& e) {
      throw Error(StrCat(what, ": ", ErrorMessage(e)));
    }
    return done(hash_ ? sum.Digest() : 0);
  }
  // CUDA or non-contiguous: blocks through the staging ring, whose copy of block k+1 runs
  // while block k is written and hashed by WriteHashed (blocks retire in order, so the hash
  // streams).
  auto sum = hash_ ? std::make_shared<Checksum>() : nullptr;
  const Box whole = WholeBox(t.sizes().vec());
  const std::vector<Block> blocks = SplitRowMajor(whole, es, ring_.block_bytes());
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Block& b = blocks[i];
    const bool last = i + 1 == blocks.size();
    const uint64_t at = offset + static_cast<uint64_t>(b.byte_offset);
    auto on_host = [&sink, at, sum, last, what, done](const uint8_t* data, int64_t n) {
      try {
        WriteHashed(sink, at, data, n, sum.get());
      } catch (const std::exception& e) {
        throw Error(StrCat(what, ": ", ErrorMessage(e)));
      }
      if (last) done(sum ? sum->Digest() : 0);
    };
    try {
      ring_.ToHost(ViewOf(t, whole, b.box), on_host);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(StrCat(what, ": ", ErrorMessage(e)));
    }
  }
}

}  // namespace dcpp::internal
