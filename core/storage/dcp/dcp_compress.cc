// CompressDcpItems: DcpWriter's `zstd` option. Once every rank has finished its data files,
// the coordinator rewrites each of them with every item compressed on its own (one zstd frame
// per item, as PyTorch's ZStandard extension writes it), and WriteDcpMetadata records the
// compressed places with transform_descriptors ["stream.zstd/1"].
#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/base/parallel.h"
#include "core/storage/dcp/dcp.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/dcp/zstd_stream.h"

namespace dcpp {

DcpItemPlaces CompressDcpItems(const proto::Metadata& md, const std::string& dir, Env* env, int level,
                               int threads) {
  // Each item's range in its file, as DcpWriter framed it: a tensor chunk's archive, a blob.
  std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> items;
  for (const proto::TensorMeta& t : md.tensors()) {
    for (const proto::ChunkMeta& c : t.chunks()) {
      const torch_archive::TensorArchive a(t.dtype(), {c.sizes().begin(), c.sizes().end()}, c.length());
      items[c.file()].push_back({c.offset() - a.prefix().size(), a.prefix().size() + c.length() + a.suffix_size()});
    }
  }
  for (const proto::BytesMeta& b : md.bytes()) items[b.file()].push_back({b.offset(), b.length()});
  std::vector<std::string> files;
  for (auto& [file, ranges] : items) {
    std::sort(ranges.begin(), ranges.end());
    ranges.erase(std::unique(ranges.begin(), ranges.end()), ranges.end());
    files.push_back(file);
  }
  std::vector<DcpItemPlaces> out(files.size());
  std::atomic<size_t> next{0};
  ParallelFor(std::max(1, std::min<int>(threads, static_cast<int>(files.size()))), [&](int) {
    for (size_t i = next++; i < files.size(); i = next++) {
      const std::string path = dir + "/" + files[i], tmp = path + ".zstd.tmp";
      std::unique_ptr<FileSource> src = env->OpenFile(path);
      env->Remove(tmp);  // debris of a compression that failed
      std::unique_ptr<FileSink> sink = env->NewFile(tmp);
      uint64_t at = 0;
      for (const auto& [offset, length] : items[files[i]]) {
        const uint64_t n = ZstdCompressRange(*src, offset, length, *sink, at, level,
                                             StrCat(path, " (item at byte ", offset, ")"));
        out[i][{files[i], offset}] = {at, n};
        at += n;
      }
      sink->Finish();
      env->Rename(tmp, path);
    }
  });
  env->SyncDir(dir);
  DcpItemPlaces all;
  for (DcpItemPlaces& m : out) all.merge(m);
  return all;
}

}  // namespace dcpp
