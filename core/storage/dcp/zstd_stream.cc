// ZstdSource and ZstdCompressRange over libzstd's streaming API (ZSTD_decompressStream,
// ZSTD_compressStream2), in blocks of the sizes zstd recommends.
#include "core/storage/dcp/zstd_stream.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/base/error.h"

namespace dcpp {
namespace {

constexpr size_t kKeep = 4 << 10;  // decompressed bytes kept at each end (archive headers)

}  // namespace

struct ZstdSource::Decoder {
  Decoder() : ds(ZSTD_createDStream()), in(ZSTD_DStreamInSize()), out(ZSTD_DStreamOutSize()) {}
  ~Decoder() { ZSTD_freeDStream(ds); }

  ZSTD_DStream* ds;
  std::vector<char> in, out;
  ZSTD_inBuffer buf{nullptr, 0, 0};
  uint64_t consumed = 0;  // compressed bytes read from the file
  uint64_t pos = 0;       // decompressed bytes produced
  size_t last = 0;        // ZSTD_decompressStream's last hint: 0 when a frame just ended
  std::string window;     // the latest decompressed bytes (at least kKeep once there are)
};

ZstdSource::ZstdSource(std::shared_ptr<FileSource> file, uint64_t offset, uint64_t length, std::string where)
    : file_(std::move(file)), offset_(offset), length_(length), where_(std::move(where)) {}

ZstdSource::~ZstdSource() = default;

void ZstdSource::Restart() {
  if (!d_) return;
  ZSTD_DCtx_reset(d_->ds, ZSTD_reset_session_only);
  d_->buf = {nullptr, 0, 0};
  d_->consumed = 0;
  d_->pos = 0;
  d_->last = 0;
  d_->window.clear();
}

bool ZstdSource::DecodeTo(uint64_t end, uint64_t want, char* out, size_t n) {
  if (!d_) {  // (a fresh decoder starts at the first compressed byte)
    d_ = std::make_unique<Decoder>();
    DCPP_CHECK(d_->ds != nullptr, where_, ": zstd could not allocate a decompression stream");
  }
  Decoder& d = *d_;
  while (d.pos < end) {
    if (d.buf.pos == d.buf.size) {
      if (d.consumed == length_) {
        DCPP_CHECK(d.last == 0, where_, ": the zstd stream is truncated (it ends inside a frame after ",
                   length_, " compressed bytes)");
        size_ = d.pos;
        size_known_ = true;
        tail_ = d.window.size() > kKeep ? d.window.substr(d.window.size() - kKeep) : d.window;
        d.window.clear();
        return false;
      }
      const size_t take = static_cast<size_t>(std::min<uint64_t>(d.in.size(), length_ - d.consumed));
      file_->ReadAt(offset_ + d.consumed, d.in.data(), take);
      d.consumed += take;
      d.buf = {d.in.data(), take, 0};
    }
    ZSTD_outBuffer ob{d.out.data(), static_cast<size_t>(std::min<uint64_t>(d.out.size(), end - d.pos)), 0};
    const size_t ret = ZSTD_decompressStream(d.ds, &ob, &d.buf);
    DCPP_CHECK(!ZSTD_isError(ret), where_, ": the zstd data is corrupt (", ZSTD_getErrorName(ret),
               ", after ", d.consumed, " of ", length_, " compressed bytes)");
    d.last = ret;
    const char* p = d.out.data();
    const uint64_t a = d.pos, b = d.pos + ob.pos;
    // The part of [a, b) that the caller wants, and the part the head keeps.
    const uint64_t lo = std::max(a, want), hi = std::min(b, want + n);
    if (out != nullptr && lo < hi) std::memcpy(out + (lo - want), p + (lo - a), hi - lo);
    const uint64_t h = head_.size();
    if (h < kKeep && a <= h && h < b) head_.append(p + (h - a), static_cast<size_t>(std::min<uint64_t>(b, kKeep) - h));
    if (!size_known_) {
      d.window.append(p, ob.pos);
      if (d.window.size() > 2 * kKeep) d.window.erase(0, d.window.size() - kKeep);
    }
    d.pos = b;
  }
  return true;
}

void ZstdSource::ReadAt(uint64_t offset, void* data, size_t length) {
  if (length == 0) return;
  if (offset <= head_.size() && length <= head_.size() - offset) {
    std::memcpy(data, head_.data() + offset, length);
    return;
  }
  if (size_known_) {
    DCPP_CHECK(offset <= size_ && length <= size_ - offset, where_, ": read of ", length, " bytes at ", offset,
               " past the end of the decompressed item (", size_, " bytes)");
    const uint64_t tail_begin = size_ - tail_.size();
    if (offset >= tail_begin) {
      std::memcpy(data, tail_.data() + (offset - tail_begin), length);
      return;
    }
  }
  if (d_ && offset < d_->pos) Restart();
  if (!d_ || offset > d_->pos) DecodeTo(offset, 0, nullptr, 0);
  const bool more = DecodeTo(offset + length, offset, static_cast<char*>(data), length);
  DCPP_CHECK(more || d_->pos >= offset + length, where_, ": read of ", length, " bytes at ", offset,
             " past the end of the decompressed item (", d_->pos, " bytes)");
  if (!more || (release_after_ > 0 && offset + length >= release_after_)) d_.reset();
}

uint64_t ZstdSource::Size() {
  if (!size_known_) {
    DecodeTo(~uint64_t{0}, 0, nullptr, 0);
    d_.reset();  // at the end: a later read behind it starts over anyway
  }
  return size_;
}

uint64_t ZstdFrameContentSize(FileSource& src, uint64_t offset, uint64_t length) {
  char head[18];  // a frame header's largest size (ZSTD_FRAMEHEADERSIZE_MAX)
  const size_t n = static_cast<size_t>(std::min<uint64_t>(length, sizeof head));
  src.ReadAt(offset, head, n);
  const unsigned long long size = ZSTD_getFrameContentSize(head, n);
  return size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR ? ~uint64_t{0} : size;
}

uint64_t ZstdCompressRange(FileSource& src, uint64_t offset, uint64_t length, FileSink& out, uint64_t out_offset,
                           int level, const std::string& where) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  DCPP_CHECK(cctx != nullptr, where, ": zstd could not allocate a compression context");
  auto check = [&](size_t ret) {
    DCPP_CHECK(!ZSTD_isError(ret), where, ": zstd compression failed (", ZSTD_getErrorName(ret), ")");
    return ret;
  };
  check(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level));
  check(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1));
  check(ZSTD_CCtx_setPledgedSrcSize(cctx.get(), length));
  std::vector<char> in(static_cast<size_t>(std::min<uint64_t>(std::max<uint64_t>(length, 1), kIoBlockBytes)));
  std::vector<char> buf(ZSTD_CStreamOutSize());
  uint64_t done = 0, written = 0;
  bool last = false;
  while (!last) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(in.size(), length - done));
    if (n > 0) src.ReadAt(offset + done, in.data(), n);
    done += n;
    last = done == length;
    ZSTD_inBuffer ib{in.data(), n, 0};
    const ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
      ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
      const size_t left = check(ZSTD_compressStream2(cctx.get(), &ob, &ib, mode));
      if (ob.pos > 0) out.WriteAt(out_offset + written, buf.data(), ob.pos);
      written += ob.pos;
      if (last ? left == 0 : ib.pos == ib.size) break;
    }
  }
  return written;
}

}  // namespace dcpp
