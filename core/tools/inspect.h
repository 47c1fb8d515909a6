// Looking inside a native dcpp checkpoint without loading it: a human-readable listing and a
// stable JSON description of the metadata (InspectText, InspectJson), and a full check of the
// data against it (Verify) that re-reads every chunk and blob through a bounded buffer.
//
// Used by the command-line tools scripts/inspect and scripts/verify; the JSON shape is
// documented in README.md ("Inspect and verify") and below. Needs no LibTorch headers: element
// sizes come from the metadata itself (ParseMetadata checks length = numel * element size).
//
// Thread-safety: the functions are independent; Verify uses `thread_count` threads of its
// own and opens its own file sources, so `reader` must allow Open() from several threads
// (every StorageReader does, see core/storage/storage.h). It must stay live during the call.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/format/metadata.h"  // ChunkBox
#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/storage/storage.h"

namespace dcpp {

// A checksum as written by the tools: 16 lowercase hex digits, e.g. "00f3a9c2d4e5b617".
std::string ChecksumHex(uint64_t checksum);

// A table of the whole checkpoint: header (format, creator, world size, mesh, checksum
// algorithm, files, bytes), each key in sorted order with its dtype, shape, bytes and chunks
// (box, file, byte offset, length), the bytes entries, the planner data, and totals.
std::string InspectText(const proto::Metadata& md);

// The same as JSON. Shape (stable; keys of every object sorted; integers are numbers):
//   {"format": "dcpp", "format_version": "1.0", "creator": str, "world_size": int,
//    "mesh": [int], "checksum_algorithm": "xxh3_64",
//    "totals": {"tensors", "bytes_entries", "chunks", "bytes", "files": int},
//    "files": [{"name": str, "bytes": int, "entries": int}],             sorted by name
//    "tensors": [{"key": str, "dtype": str, "shape": [int], "numel": int,
//                 "bytes": int,                            sum of the chunks' lengths
//                 "chunks": [{"offsets": [int], "sizes": [int], "file": str,
//                             "offset": int, "length": int, "checksum": hex16}]}],
//    "bytes": [{"key": str, "file": str, "offset": int, "length": int, "checksum": hex16}],
//    "planner_data": {str: str}}
// "tensors" and "bytes" are sorted by key; chunks keep their order in the metadata. "bytes"
// totals count every chunk and blob; "files" counts the data files the metadata names.
nlohmann::json InspectJson(const proto::Metadata& md);

// The line inspect and verify print, loudly, for a native checkpoint whose metadata says its
// checksum algorithm is "none": nothing can check its data.
constexpr char kNoChecksumsWarning[] = "checksums: NONE — data is not verified";

// Warnings about the checkpoint that its metadata alone shows: for a native checkpoint
// (`native`: dcpp's own format, where checksums are the rule) whose checksum algorithm is
// "none", kNoChecksumsWarning and why. Empty when there is nothing to warn about.
std::vector<std::string> InspectWarnings(const proto::Metadata& md, bool native);

struct VerifyOptions {
  // Threads reading and hashing data. Default: 2.
  int thread_count = 2;
  // Read buffer per thread; chunks larger than this are read in blocks. Default: 8 MiB.
  int64_t buffer_bytes = 8 << 20;
  // Problems kept in the report; the rest are only counted. Default: 100.
  int max_problems = 100;
};

struct VerifyProblem {
  std::string key;      // the tensor or bytes key, or "" for the checkpoint as a whole
  std::string file;     // the file at fault (".metadata" or a data file), or ""
  std::string message;  // a complete sentence naming the key, chunk box and file
};

struct VerifyReport {
  std::vector<VerifyProblem> problems;   // in key order, at most max_problems
  int64_t problems_omitted = 0;          // problems found beyond max_problems
  std::vector<std::string> notes;        // not problems, e.g. data files nothing references
  // Not problems either, but to be shown loudly: InspectWarnings for a native checkpoint read
  // through a FileSystemReader (its checksums are "none": the data was read, not verified).
  std::vector<std::string> warnings;
  std::vector<std::string> data_files;   // the data files the metadata names, sorted
  int64_t tensors = 0;
  int64_t bytes_entries = 0;
  int64_t chunks_checked = 0;      // chunks whose bytes were read in full and hashed
  int64_t blobs_checked = 0;       // bytes entries likewise
  int64_t overlaps_compared = 0;   // pairs of overlapping chunks whose common bytes were compared
  int64_t bytes_read = 0;          // every byte read from data files

  int64_t problem_count() const {
    return static_cast<int64_t>(problems.size()) + problems_omitted;
  }
  bool ok() const { return problem_count() == 0; }
};

// Checks the checkpoint behind `reader` and reports every problem found rather than stopping
// at the first: metadata that does not parse; a chunk or blob whose bytes are missing
// (truncated or absent file) or whose XXH3-64 checksum differs; a tensor not exactly covered
// by its chunks (the first uncovered box and how many elements lack a chunk); overlapping
// chunks whose common elements differ; a key listed twice. Never throws for a problem of the
// checkpoint; throws dcpp::Error only for bad options.
VerifyReport Verify(StorageReader& reader, const VerifyOptions& options = {});

// The same for the folder `dir`, adding a note for each file there that the metadata does not
// reference (debris of a failed save, or a stray file).
VerifyReport Verify(const std::string& dir, const VerifyOptions& options = {});

}  // namespace dcpp
