// A full check of a checkpoint's data against its metadata (Verify): re-reads every chunk and
// blob through a bounded buffer, compares checksums, checks that each tensor's chunks cover it
// exactly and that overlapping chunks agree, and reports every problem found.
//
// Used by the command-line tool scripts/verify; the listing side (InspectText, InspectJson,
// InspectWarnings) is in inspect.h. Needs no LibTorch headers: element sizes come from the
// metadata itself (ParseMetadata checks length = numel * element size).
//
// Thread-safety: Verify uses `thread_count` threads of its own and opens its own file sources,
// so `reader` must allow Open() from several threads (every StorageReader does, see
// core/storage/storage.h). It must stay live during the call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/storage/storage.h"

namespace dcpp {

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
// at the first: metadata that does not parse or that ParseMetadata refuses (e.g. a reserved
// name such as .metadata as a data file); a chunk or blob whose bytes are missing (truncated
// or absent file) or whose XXH3-64 checksum differs; a bool chunk holding a byte other than 0
// or 1 (its first such element); a tensor not exactly covered by its chunks (the first
// uncovered box and how many elements lack a chunk); overlapping chunks; a key listed twice.
// Empty chunks and zero-length blobs are not read (their files need not exist). Never throws
// for a problem of the checkpoint; throws dcpp::Error only for bad options.
VerifyReport Verify(StorageReader& reader, const VerifyOptions& options = {});

// The same for the folder `dir`, adding a note for each file there that the metadata does not
// reference (debris of a failed save, or a stray file).
VerifyReport Verify(const std::string& dir, const VerifyOptions& options = {});

}  // namespace dcpp
