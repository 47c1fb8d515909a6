// Chunk I/O: the one way dcpp moves a saved chunk's or blob's bytes between memory and a data
// file, and the one way a bad chunk is reported.
//
// Bytes move in blocks of kHashedBlockBytes, each block hashed right after it is written or
// read, while it is still in cache: one pass over memory. Save, load, convert, diff, verify
// and the safetensors export all go through these functions, so the block size, the checksum
// check and the wording of a corrupt-data error are decided here once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/format/checksum.h"
#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/storage/storage.h"

namespace dcpp {

// The block of ReadHashed and WriteHashed. A read() from the page cache streams the block
// through the core's L2 twice (the page-cache source and the destination), so the block must
// be well under half the L2 (2 MiB on the machines measured) for the hash that follows to find
// it there: hashing right after a 256 KiB read ran at ~16 GB/s, after a 1 MiB read at ~11.5
// GB/s and after a 4 MiB read at ~8.5 GB/s (cold memory: ~8 GB/s), with the read itself as
// fast at 256 KiB as at 1 MiB. Smaller blocks gained nothing more (64 KiB: ~16 GB/s).
constexpr int64_t kHashedBlockBytes = 256 << 10;

// Reads `length` bytes at `offset` of `src` into `dst`, block by block, feeding each block to
// `sum` when it is not null.
void ReadHashed(FileSource& src, uint64_t offset, void* dst, int64_t length, Checksum* sum);

// Writes `length` bytes of `data` at `offset` of `sink`, block by block, feeding each block
// to `sum` (after writing it) when it is not null.
void WriteHashed(FileSink& sink, uint64_t offset, const void* data, int64_t length, Checksum* sum);

// Throws the corrupt-data error for chunk `c` of key `fqn` unless `digest` is its checksum:
// "checksum mismatch for key 'K' chunk BOX in DIR/FILE (bytes A..B): the data file is corrupt".
void CheckChunkChecksum(uint64_t digest, const StorageReader& reader, const std::string& fqn,
                        const proto::ChunkMeta& c);

// The index of the first of the `n` bytes at `data` that is neither 0x00 nor 0x01 (the only
// valid bytes of a bool element), or -1 when there is none.
int64_t FirstInvalidBool(const void* data, int64_t n);

// The coordinates ("[i, j]") of element `index`, counted row-major, of `box`.
std::string ElementCoordinates(const Box& box, int64_t index);

// Throws the invalid-data error for key `fqn` (a bool tensor) unless every byte at `data` is
// 0 or 1; `data` holds the elements of `region` (inside chunk `c`, global coordinates)
// row-major: "key 'K' chunk BOX in DIR/FILE: element [i, j] is the byte 0x02, not a bool
// (0x00 false or 0x01 true): the data file is corrupt". Readers call it whatever their
// checksum setting: a bool holding another byte is undefined behaviour in LibTorch.
void CheckBools(const void* data, const Box& region, const StorageReader& reader, const std::string& fqn,
                const proto::ChunkMeta& c);

// A saved blob, read whole and, when `verify`, checked against its checksum (the error names
// the bytes key and the file). `open` gives the blob's open file; it is not called for a
// zero-length blob, whose file is never read and need not exist.
std::string ReadBlob(const std::function<FileSource&()>& open, const StorageReader& reader,
                     const proto::BytesMeta& b, bool verify);

// Rethrows the exception in flight (call it inside a catch block) as a dcpp::Error that names
// key `fqn` and the chunk `box` it came from, unless its message names the key already.
[[noreturn]] void RethrowForChunk(const std::string& fqn, const Box& box);

}  // namespace dcpp
