#include "core/engine/chunk_io.h"

#include <algorithm>
#include <exception>

#include "core/base/error.h"
#include "core/format/metadata.h"

namespace dcpp {

void ReadHashed(FileSource& src, uint64_t offset, void* dst, int64_t length, Checksum* sum) {
  char* out = static_cast<char*>(dst);
  for (int64_t off = 0; off < length; off += kIoBlockBytes) {
    const size_t n = static_cast<size_t>(std::min(kIoBlockBytes, length - off));
    src.ReadAt(offset + static_cast<uint64_t>(off), out + off, n);
    if (sum != nullptr) sum->Update(out + off, n);
  }
}

void WriteHashed(FileSink& sink, uint64_t offset, const void* data, int64_t length, Checksum* sum) {
  const char* in = static_cast<const char*>(data);
  for (int64_t off = 0; off < length; off += kIoBlockBytes) {
    const size_t n = static_cast<size_t>(std::min(kIoBlockBytes, length - off));
    if (sum != nullptr) sum->Update(in + off, n);
    sink.WriteAt(offset + static_cast<uint64_t>(off), in + off, n);
  }
}

void CheckChunkChecksum(uint64_t digest, const StorageReader& reader, const std::string& fqn,
                        const proto::ChunkMeta& c) {
  DCPP_CHECK(digest == c.checksum(), "checksum mismatch for key '", fqn, "' chunk ",
             ChunkBox(c).ToString(), " in ", reader.Describe(), "/", c.file(), " (bytes ", c.offset(),
             "..", c.offset() + c.length(), "): the data file is corrupt");
}

std::string ReadBlob(FileSource& src, const StorageReader& reader, const proto::BytesMeta& b, bool verify) {
  std::string data(b.length(), '\0');
  src.ReadAt(b.offset(), data.data(), data.size());
  DCPP_CHECK(!verify || Checksum::Of(data.data(), data.size()) == b.checksum(),
             "checksum mismatch for bytes key '", b.fqn(), "' in ", reader.Describe(), "/", b.file(),
             ": the data file is corrupt");
  return data;
}

void RethrowForChunk(const std::string& fqn, const Box& box) {
  try {
    throw;
  } catch (const std::exception& e) {
    const std::string msg = ErrorMessage(e);
    if (msg.find("'" + fqn + "'") != std::string::npos) throw;
    throw Error(StrCat("key '", fqn, "' chunk ", box.ToString(), ": ", msg));
  }
}

}  // namespace dcpp
