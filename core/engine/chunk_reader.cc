#include "core/engine/chunk_reader.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "core/engine/chunk_io.h"
#include "core/engine/engine_util.h"
#include "core/engine/staging.h"
#include "core/format/checksum.h"
#include "core/format/metadata.h"
#include "core/model/dtype.h"
#include "core/storage/gds/gds.h"
#include "core/storage/native/direct_file.h"

namespace dcpp::internal {

class ChunkReader::Impl {
 public:
  Impl(StorageReader& reader, const LoadOptions& opt, Counters& counters)
      : reader_(reader), opt_(opt), counters_(counters),
        ring_(opt.staging_bytes, opt.staging_buffers) {}

  // Completes the copies still in flight out of the staging ring.
  void Drain() { ring_.Drain(); }
  const StagingRing& ring() const { return ring_; }

  void Read(const Unit& u) {
    FileSource& src = Source(u.chunk->file());
    const int64_t es = ElementSize(DtypeFromName(u.meta->dtype()));
    // Distinct overlaps (replicated targets may ask for the same region twice).
    int64_t covered = 0;
    if (u.pieces.size() == 1) {  // the usual case: no set to build
      covered = u.pieces[0].overlap.numel();
    } else {
      std::set<Box> distinct;
      for (const Piece& p : u.pieces) {
        if (distinct.insert(p.overlap).second) covered += p.overlap.numel();
      }
    }
    if (covered >= u.box.numel()) {
      ReadWhole(u, src, es);
    } else {
      for (const Piece& p : u.pieces) ReadPart(u, p, src, es);
    }
  }

 private:
  FileSource& Source(const std::string& file) {
    auto& s = sources_[file];
    if (!s) {
      s = reader_.Open(file);  // checks the name; the ordinary reader where O_DIRECT is not used
      const std::string path = opt_.direct_io ? LocalPathOf(reader_, file) : "";
      if (!path.empty()) {
        std::string why;
        if (auto direct = OpenDirect(path, &direct_buffer_, &why)) {
          s = std::move(direct);
        } else {
          counters_.NoteDirectIo(why);
        }
      } else if (opt_.direct_io) {
        counters_.NoteDirectIo(StrCat(reader_.Describe(), "/", file, " is not a plain local file"));
      }
    }
    return *s;
  }

  void Pread(FileSource& src, uint64_t off, void* dst, int64_t n) {
    if (n == 0) return;
    src.ReadAt(off, dst, static_cast<size_t>(n));
    Count(n, 1);
  }

  void Count(int64_t bytes, int64_t calls) {
    if (bytes == 0) return;
    counters_.bytes_read += bytes;
    counters_.read_calls += calls;
  }

  // GPUDirect Storage: the whole chunk from its file straight into `dst`. False (and a note)
  // where it is off or unavailable; the caller then stages.
  bool ReadToGpu(const Unit& u, const at::Tensor& dst) {
    // (Bools are read through host memory, where their bytes are checked.)
    if (!opt_.gpudirect || opt_.verify_checksums || IsBool(u)) return false;
    auto it = gds_files_.find(u.chunk->file());
    if (it == gds_files_.end()) {
      const std::string path = LocalPathOf(reader_, u.chunk->file());
      std::string why;
      std::unique_ptr<GdsFile> file;
      if (path.empty()) {
        why = StrCat(reader_.Describe(), "/", u.chunk->file(), " is not a plain local file");
      } else {
        file = GdsFile::Open(path, &why);
      }
      if (!file) counters_.Note(why);
      it = gds_files_.emplace(u.chunk->file(), std::move(file)).first;
    }
    if (!it->second) return false;
    if (!gpu_ordered_) {
      // cuFile writes outside any stream: let the kernels already queued on the target finish.
      c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(dst.device()).synchronize();
      gpu_ordered_ = true;
    }
    c10::DeviceGuard guard(dst.device());
    const int64_t n = static_cast<int64_t>(u.chunk->length());
    it->second->Read(dst.mutable_data_ptr(), static_cast<size_t>(n), u.chunk->offset());
    counters_.bytes_read += n;
    counters_.read_calls += 1;
    counters_.gpudirect += n;
    return true;
  }

  static bool IsBool(const Unit& u) { return u.meta->dtype() == "bool"; }

  // A bool holding a byte other than 0 or 1 is refused (chunk_io.h: CheckBools).
  void CheckBoolBytes(const Unit& u, const void* data, const Box& region) {
    if (IsBool(u)) CheckBools(data, region, reader_, u.meta->fqn(), *u.chunk);
  }

  // Whether any target of `u` is on a CUDA device (its staging buffers are then pinned).
  static bool ToCuda(const Unit& u) {
    return std::any_of(u.pieces.begin(), u.pieces.end(),
                       [](const Piece& p) { return p.target->tensor.is_cuda(); });
  }

  void CheckSum(const Unit& u, const Checksum& sum) {
    if (!opt_.verify_checksums) return;
    CheckChunkChecksum(sum.Digest(), reader_, u.meta->fqn(), *u.chunk);
    counters_.verified += 1;
  }

  // The whole chunk is needed: read it once, sequentially, verifying its checksum, and copy
  // each block into every target that overlaps it.
  void ReadWhole(const Unit& u, FileSource& src, int64_t es) {
    const c10::ScalarType dtype = DtypeFromName(u.meta->dtype());
    const int64_t nbytes = static_cast<int64_t>(u.chunk->length());
    if (u.pieces.size() == 1 && u.pieces[0].overlap == u.box) {
      at::Tensor dst = ViewOf(u.pieces[0].target->tensor, u.pieces[0].target->box, u.box);
      if (dst.device().is_cpu() && dst.is_contiguous()) {  // straight into the target
        // Read in blocks and hash each one while it is in cache: one pass over memory.
        Checksum sum;
        ReadHashed(src, u.chunk->offset(), dst.mutable_data_ptr(), nbytes, opt_.verify_checksums ? &sum : nullptr);
        Count(nbytes, (nbytes + kHashedBlockBytes - 1) / kHashedBlockBytes);
        CheckSum(u, sum);
        CheckBoolBytes(u, dst.const_data_ptr(), u.box);
        return;
      }
      if (dst.is_cuda() && dst.is_contiguous() && ReadToGpu(u, dst)) return;
    }
    // Through the staging ring: the read of block k+1 overlaps the copies out of block k.
    Checksum sum;
    const bool pinned = ToCuda(u);
    for (const Block& b : SplitRowMajor(u.box, es, ring_.block_bytes())) {
      const int64_t bytes = b.box.numel() * es;
      const StagingRing::Buffer buf = ring_.Acquire(bytes, pinned);
      ReadHashed(src, u.chunk->offset() + static_cast<uint64_t>(b.byte_offset), buf.data, bytes,
                 opt_.verify_checksums ? &sum : nullptr);
      Count(bytes, 1);
      CheckBoolBytes(u, buf.data, b.box);
      const at::Tensor staged = ring_.View(buf, 0, dtype, b.box.sizes);
      std::vector<std::pair<at::Tensor, at::Tensor>> copies;
      for (const Piece& p : u.pieces) {
        const auto part = Intersect(b.box, p.overlap);
        if (part) copies.emplace_back(ViewOf(p.target->tensor, p.target->box, *part), ViewOf(staged, b.box, *part));
      }
      ring_.Scatter(buf, copies);
    }
    CheckSum(u, sum);
  }

  // Only part of the chunk is needed: read just the byte runs of the overlap (coalesced when
  // the gaps are small), in blocks bounded by the staging budget.
  void ReadPart(const Unit& u, const Piece& p, FileSource& src, int64_t es) {
    const c10::ScalarType dtype = DtypeFromName(u.meta->dtype());
    for (const Block& blk : SplitRowMajor(p.overlap, es, ring_.block_bytes())) {
      const Box& block = blk.box;
      const int64_t block_bytes = block.numel() * es;
      at::Tensor dst = ViewOf(p.target->tensor, p.target->box, block);
      const bool direct = dst.device().is_cpu() && dst.is_contiguous();
      StagingRing::Buffer buf;
      if (!direct) buf = ring_.Acquire(block_bytes, dst.is_cuda());
      uint8_t* out = direct ? static_cast<uint8_t*>(dst.mutable_data_ptr()) : buf.data;
      // One batch for the block: the source merges runs with small gaps (kReadGapBytes) and
      // reads the rest at once where it can (a local file: preadv, io_uring).
      const std::vector<ByteRun> runs = RunsOf(u.box, block, es);
      requests_.clear();
      int64_t pos = 0;  // bytes of `out` filled
      for (const ByteRun& r : runs) {
        requests_.push_back({u.chunk->offset() + r.offset, out + pos, static_cast<size_t>(r.length)});
        pos += r.length;
      }
      src.ReadV(requests_);
      for (const ByteRun& rd : CoalesceRuns(runs, static_cast<int64_t>(kReadGapBytes))) Count(rd.length, 1);
      CheckBoolBytes(u, out, block);
      if (!direct) ring_.Scatter(buf, {{dst, ring_.View(buf, 0, dtype, block.sizes)}});
    }
  }

  StorageReader& reader_;
  const LoadOptions& opt_;
  Counters& counters_;
  DirectBuffer direct_buffer_;  // declared before the sources that use it (LoadOptions::direct_io)
  std::map<std::string, std::unique_ptr<FileSource>> sources_;
  StagingRing ring_;
  std::map<std::string, std::unique_ptr<GdsFile>> gds_files_;  // null: staged instead
  bool gpu_ordered_ = false;
  std::vector<ReadRequest> requests_;  // ReadPart's batch, kept for its capacity
};

ChunkReader::ChunkReader(StorageReader& reader, const LoadOptions& opt, Counters& counters)
    : impl_(std::make_unique<Impl>(reader, opt, counters)) {}
ChunkReader::~ChunkReader() = default;
void ChunkReader::Read(const Unit& u) { impl_->Read(u); }
void ChunkReader::Drain() { impl_->Drain(); }
const StagingRing& ChunkReader::ring() const { return impl_->ring(); }

}  // namespace dcpp::internal
