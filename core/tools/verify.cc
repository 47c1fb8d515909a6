// Verify plans a list of checks from the metadata (a checksum per chunk and blob, a comparison
// per overlapping pair of chunks, the coverage of each tensor: coverage.h), runs the reads on a
// few threads in file order, and reports the problems in key order.
#include "core/tools/verify.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/base/parallel.h"
#include "core/engine/chunk_io.h"
#include "core/format/checksum.h"
#include "core/format/file_names.h"
#include "core/format/metadata.h"
#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/storage.h"
#include "core/tools/coverage.h"
#include "core/tools/inspect.h"
#include "core/tools/inspect_util.h"

namespace dcpp {
namespace {

// Bytes per element, from the first non-empty chunk (ParseMetadata checked that every chunk's
// length is numel * element size); 0 when the tensor has no data.
int64_t ElementSizeOf(const proto::TensorMeta& t) {
  for (const auto& c : t.chunks()) {
    const int64_t n = ChunkBox(c).numel();
    if (n > 0) return static_cast<int64_t>(c.length()) / n;
  }
  return 0;
}

// One check that reads data: a chunk's or blob's checksum, or the common part of two chunks.
struct Check {
  enum Kind { kChecksum, kOverlap } kind = kChecksum;
  int64_t order = 0;   // position in the report
  bool is_blob = false;
  std::string key;
  std::string what;    // "key 'k' chunk [0:8, 0:10] in F" or "bytes 'k' in F"
  // kChecksum: the byte range and its expected checksum (none for formats without checksums:
  // then only that the bytes can be read).
  std::string file;
  uint64_t offset = 0, length = 0, checksum = 0;
  bool has_checksum = true;
  // A chunk of a bool tensor (its bytes must be 0 or 1), and its box for naming an element.
  bool is_bool = false;
  Box box;
  // kOverlap: the two chunks and their common box.
  const proto::ChunkMeta* a = nullptr;
  const proto::ChunkMeta* b = nullptr;
  Box common;
  int64_t elem_size = 0;
};

struct Found {
  int64_t order;
  VerifyProblem problem;
};

// Runs checks on one thread with its own buffer and its own open files.
class Checker {
 public:
  Checker(StorageReader& reader, int64_t buffer_bytes)
      : reader_(reader), buffer_(static_cast<size_t>(std::max<int64_t>(buffer_bytes, 2))) {}

  void Run(const Check& c) {
    try {
      if (c.kind == Check::kChecksum) {
        RunChecksum(c);
      } else {
        RunOverlap(c);
      }
    } catch (const std::exception& e) {
      Problem(c, c.file, StrCat(c.what, ": ", ErrorMessage(e)));
    }
  }

  std::vector<Found> found;
  int64_t chunks = 0, blobs = 0, overlaps = 0, bytes_read = 0;

 private:
  void Problem(const Check& c, const std::string& file, std::string message) {
    found.push_back({c.order, {c.key, file, std::move(message)}});
  }

  // The open file, or nullptr (after reporting) when it cannot be opened.
  FileSource* Source(const Check& c, const std::string& file, bool report) {
    auto it = sources_.find(file);
    if (it == sources_.end()) {
      std::unique_ptr<FileSource> src;
      std::string error;
      try {
        src = reader_.Open(file);
      } catch (const std::exception& e) {
        error = ErrorMessage(e);
      }
      it = sources_.emplace(file, std::make_pair(std::move(src), error)).first;
    }
    if (!it->second.first && report) Problem(c, file, StrCat(c.what, ": ", it->second.second));
    return it->second.first.get();
  }

  // True when [offset, offset + length) lies inside the file; reports it otherwise.
  bool InFile(const Check& c, FileSource& src, const std::string& file, uint64_t offset,
              uint64_t length, bool report) {
    const uint64_t size = src.Size();
    if (offset + length <= size) return true;
    if (report) {
      Problem(c, file, StrCat(c.what, ": needs bytes [", offset, ", ", offset + length,
                              ") but the file has ", size, " bytes (truncated)"));
    }
    return false;
  }

  void Read(FileSource& src, uint64_t offset, char* dst, int64_t length) {
    if (length == 0) return;
    src.ReadAt(offset, dst, static_cast<size_t>(length));
    bytes_read += length;
  }

  void RunChecksum(const Check& c) {
    // An empty chunk or zero-length blob has no bytes: its file is never read and need not
    // exist (docs/format.md); only its checksum (of no bytes) is compared.
    FileSource* src = c.length == 0 ? nullptr : Source(c, c.file, true);
    if (c.length != 0 && (src == nullptr || !InFile(c, *src, c.file, c.offset, c.length, true))) return;
    Checksum sum;
    const int64_t block = static_cast<int64_t>(buffer_.size());
    int64_t bad_bool = -1;  // the first byte of a bool chunk that is neither 0 nor 1
    unsigned char bad_value = 0;
    for (uint64_t pos = 0; pos < c.length; pos += static_cast<uint64_t>(block)) {
      const int64_t n = std::min<int64_t>(block, static_cast<int64_t>(c.length - pos));
      ReadHashed(*src, c.offset + pos, buffer_.data(), n, c.has_checksum ? &sum : nullptr);
      bytes_read += n;
      if (c.is_bool && bad_bool < 0) {
        const int64_t i = FirstInvalidBool(buffer_.data(), n);
        if (i >= 0) {
          bad_bool = static_cast<int64_t>(pos) + i;
          bad_value = static_cast<unsigned char>(buffer_[static_cast<size_t>(i)]);
        }
      }
    }
    (c.is_blob ? blobs : chunks) += 1;
    if (bad_bool >= 0) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", bad_value);
      Problem(c, c.file, StrCat(c.what, ": element ", ElementCoordinates(c.box, bad_bool), " (byte ",
                                c.offset + static_cast<uint64_t>(bad_bool), " of the file) is ", hex,
                                ", not a bool (0x00 false or 0x01 true); load and convert refuse it"));
    }
    if (c.has_checksum && sum.Digest() != c.checksum) {
      Problem(c, c.file, StrCat(c.what, ": checksum mismatch in bytes [", c.offset, ", ",
                                c.offset + c.length, "): the metadata has ", ChecksumHex(c.checksum),
                                ", the data hashes to ", ChecksumHex(sum.Digest())));
    }
  }

  // Reads the bytes of `region` (inside chunk `m`) in row-major order into `dst`.
  void ReadRegion(FileSource& src, const proto::ChunkMeta& m, const Box& region, int64_t es, char* dst) {
    for (const ByteRun& r : RunsOf(ChunkBox(m), region, es)) {
      Read(src, m.offset() + static_cast<uint64_t>(r.offset), dst, r.length);
      dst += r.length;
    }
  }

  // Every overlap is a problem (ParseMetadata refuses it for loading); the message says whether
  // the common elements agree. Missing files and truncation are reported by the chunks' own
  // checksum checks.
  void RunOverlap(const Check& c) {
    const std::string pair = StrCat("key '", c.key, "': chunks ", ChunkBox(*c.a).ToString(), " in ",
                                    c.a->file(), " and ", ChunkBox(*c.b).ToString(), " in ", c.b->file(),
                                    " overlap in ", c.common.ToString());
    const std::string refused = " (load and convert refuse overlapping chunks)";
    FileSource* sa = Source(c, c.a->file(), false);
    FileSource* sb = Source(c, c.b->file(), false);
    if (sa == nullptr || sb == nullptr || !InFile(c, *sa, c.a->file(), c.a->offset(), c.a->length(), false) ||
        !InFile(c, *sb, c.b->file(), c.b->offset(), c.b->length(), false)) {
      Problem(c, c.a->file(), pair + refused);
      return;
    }
    const int64_t half = static_cast<int64_t>(buffer_.size()) / 2;
    char* ba = buffer_.data();
    char* bb = buffer_.data() + half;
    for (const Block& blk : SplitRowMajor(c.common, c.elem_size, half)) {
      const int64_t n = blk.box.numel() * c.elem_size;
      ReadRegion(*sa, *c.a, blk.box, c.elem_size, ba);
      ReadRegion(*sb, *c.b, blk.box, c.elem_size, bb);
      if (std::memcmp(ba, bb, static_cast<size_t>(n)) != 0) {
        int64_t i = 0;
        while (ba[i] == bb[i]) ++i;
        Problem(c, c.a->file(),
                StrCat(pair, " but hold different data (first difference at ",
                       ElementCoordinates(blk.box, i / c.elem_size), ")", refused));
        overlaps += 1;
        return;
      }
    }
    Problem(c, c.a->file(), StrCat(pair, "; the common elements agree", refused));
    overlaps += 1;
  }

  StorageReader& reader_;
  std::vector<char> buffer_;
  std::map<std::string, std::pair<std::unique_ptr<FileSource>, std::string>> sources_;
};

// Plans every check of `md`; problems found from the metadata alone go to `found`.
std::vector<Check> PlanChecks(const proto::Metadata& md, std::vector<Found>& found,
                              std::vector<std::string>& notes) {
  std::vector<Check> checks;
  int64_t order = 0;
  std::map<std::string, int> seen;
  for (const auto& t : md.tensors()) seen[t.fqn()] += 1;
  for (const auto& b : md.bytes()) seen[b.fqn()] += 1;
  for (const auto& [key, n] : seen) {
    if (n > 1) {
      found.push_back({order++, {key, ".metadata", StrCat("key '", key, "' is listed ", n,
                                                          " times in the metadata")}});
    }
  }
  for (const auto* t : SortedByKey(md.tensors())) {
    std::vector<Box> boxes;
    for (const auto& c : t->chunks()) boxes.push_back(ChunkBox(c));
    // Overlapping pairs: a sweep over dimension 0 (0-d chunks all hold the one element).
    std::vector<size_t> by_start(boxes.size());
    for (size_t i = 0; i < boxes.size(); ++i) by_start[i] = i;
    auto start = [&](size_t i) { return boxes[i].offsets.empty() ? 0 : boxes[i].offsets[0]; };
    auto end = [&](size_t i) {
      return boxes[i].offsets.empty() ? 1 : boxes[i].offsets[0] + boxes[i].sizes[0];
    };
    std::stable_sort(by_start.begin(), by_start.end(),
                     [&](size_t i, size_t j) { return start(i) < start(j); });
    std::vector<std::pair<size_t, size_t>> pairs;
    for (size_t x = 0; x < by_start.size(); ++x) {
      const size_t i = by_start[x];
      if (boxes[i].empty()) continue;
      for (size_t y = x + 1; y < by_start.size() && start(by_start[y]) < end(i); ++y) {
        const size_t j = by_start[y];
        if (!boxes[j].empty() && Intersect(boxes[i], boxes[j])) {
          pairs.emplace_back(std::min(i, j), std::max(i, j));
        }
      }
    }
    std::sort(pairs.begin(), pairs.end());

    const std::vector<int64_t> shape(t->shape().begin(), t->shape().end());
    const Coverage cov = CoverageOf(shape, boxes, pairs.empty());
    if (!cov.checked) {
      notes.push_back(StrCat("key '", t->fqn(), "': coverage not checked (", boxes.size(),
                             " chunks cut the tensor into too many pieces)"));
    } else if (!cov.exact) {
      found.push_back({order++, {t->fqn(), "", StrCat("key '", t->fqn(), "' shape ", ListString(shape),
                                                      ": region ", cov.first_gap.ToString(),
                                                      " is in no chunk (", cov.uncovered, " of ",
                                                      NumelOf(*t), " elements uncovered)")}});
    }
    for (int i = 0; i < t->chunks_size(); ++i) {
      const auto& c = t->chunks(i);
      Check k;
      k.order = order++;
      k.key = t->fqn();
      k.what = StrCat("key '", t->fqn(), "' chunk ", boxes[i].ToString(), " in ", c.file());
      k.file = c.file();
      k.offset = c.offset();
      k.length = c.length();
      k.checksum = c.checksum();
      k.has_checksum = HasChecksums(md);
      k.is_bool = t->dtype() == "bool";
      k.box = boxes[i];
      checks.push_back(std::move(k));
    }
    const int64_t es = ElementSizeOf(*t);
    for (const auto& [i, j] : pairs) {
      Check k;
      k.kind = Check::kOverlap;
      k.order = order++;
      k.key = t->fqn();
      k.a = &t->chunks(static_cast<int>(i));
      k.b = &t->chunks(static_cast<int>(j));
      k.common = *Intersect(boxes[i], boxes[j]);
      k.elem_size = es;
      k.what = StrCat("key '", t->fqn(), "' chunks ", boxes[i].ToString(), " and ", boxes[j].ToString());
      k.file = k.a->file();
      checks.push_back(std::move(k));
    }
  }
  for (const auto* b : SortedByKey(md.bytes())) {
    Check k;
    k.order = order++;
    k.is_blob = true;
    k.key = b->fqn();
    k.what = StrCat("bytes '", b->fqn(), "' in ", b->file());
    k.file = b->file();
    k.offset = b->offset();
    k.length = b->length();
    k.checksum = b->checksum();
    k.has_checksum = HasChecksums(md);
    checks.push_back(std::move(k));
  }
  return checks;
}

// Verify, and whether the metadata could be read at all.
VerifyReport VerifyChecked(StorageReader& reader, const VerifyOptions& opt, bool* parsed) {
  DCPP_CHECK(opt.thread_count >= 1, "verify: thread_count must be at least 1, not ", opt.thread_count);
  DCPP_CHECK(opt.buffer_bytes >= 1, "verify: buffer_bytes must be positive, not ", opt.buffer_bytes);
  DCPP_CHECK(opt.max_problems >= 0, "verify: max_problems must not be negative");
  VerifyReport report;
  *parsed = false;
  proto::Metadata md;
  try {
    md = ParseMetadata(reader.ReadMetadata(), reader.Describe(), Conflicts::kAllow);
  } catch (const std::exception& e) {
    report.problems.push_back({"", ".metadata", ErrorMessage(e)});
    return report;
  }
  *parsed = true;
  // dcpp's own format (FileSystemReader) always records checksums unless told not to.
  report.warnings = InspectWarnings(md, dynamic_cast<FileSystemReader*>(&reader) != nullptr);
  report.tensors = md.tensors_size();
  report.bytes_entries = md.bytes_size();
  for (const auto& [name, use] : FilesOf(md)) report.data_files.push_back(name);
  if (!HasChecksums(md) && dynamic_cast<FileSystemReader*>(&reader) != nullptr) {
    // dcpp never writes this: a native checkpoint whose metadata turns its checksums off was
    // edited, and nothing it holds can be checked.
    report.problems.push_back({"", ".metadata", StrCat("checkpoint ", reader.Describe(),
                                                       ": CHECKSUMS ARE OFF: the native metadata says checksum "
                                                       "algorithm '", md.checksum_algorithm(),
                                                       "', so no chunk or blob can be checked against it")});
  } else if (!HasChecksums(md)) {
    report.notes.push_back(StrCat("checksums are not available for this format (checksum algorithm '",
                                  md.checksum_algorithm(), "'): every chunk was read, but its "
                                  "bytes could not be checked against the metadata"));
  }

  std::vector<Found> found;
  const std::vector<Check> checks = PlanChecks(md, found, report.notes);
  // Read in file order (sequential access); report in key order.
  std::vector<size_t> exec(checks.size());
  for (size_t i = 0; i < exec.size(); ++i) exec[i] = i;
  std::stable_sort(exec.begin(), exec.end(), [&](size_t i, size_t j) {
    return std::tie(checks[i].file, checks[i].offset) < std::tie(checks[j].file, checks[j].offset);
  });
  const int threads = static_cast<int>(std::min<size_t>(opt.thread_count, std::max<size_t>(exec.size(), 1)));
  std::vector<std::unique_ptr<Checker>> checkers;
  for (int t = 0; t < threads; ++t) checkers.push_back(std::make_unique<Checker>(reader, opt.buffer_bytes));
  std::atomic<size_t> next{0};
  // (Checkers record problems; what throws is out of memory and the like.)
  ParallelFor(threads, [&](int t) {
    for (size_t i; (i = next++) < exec.size();) checkers[t]->Run(checks[exec[i]]);
  });
  for (auto& c : checkers) {
    found.insert(found.end(), std::make_move_iterator(c->found.begin()),
                 std::make_move_iterator(c->found.end()));
    report.chunks_checked += c->chunks;
    report.blobs_checked += c->blobs;
    report.overlaps_compared += c->overlaps;
    report.bytes_read += c->bytes_read;
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const Found& a, const Found& b) { return a.order < b.order; });
  for (auto& f : found) {
    if (static_cast<int64_t>(report.problems.size()) < opt.max_problems) {
      report.problems.push_back(std::move(f.problem));
    } else {
      report.problems_omitted += 1;
    }
  }
  return report;
}

}  // namespace

VerifyReport Verify(StorageReader& reader, const VerifyOptions& options) {
  bool parsed = false;
  return VerifyChecked(reader, options, &parsed);
}

VerifyReport Verify(const std::string& dir, const VerifyOptions& options) {
  FileSystemReader reader(dir);
  bool parsed = false;
  VerifyReport report = VerifyChecked(reader, options, &parsed);
  if (!parsed) return report;
  const std::set<std::string> referenced(report.data_files.begin(), report.data_files.end());
  std::error_code ec;
  std::vector<std::filesystem::directory_entry> entries;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) entries.push_back(e);
  std::sort(entries.begin(), entries.end());
  for (const auto& e : entries) {
    const std::string name = e.path().filename().string();
    std::error_code size_ec;
    // (.dcpp.lock exists while a save or convert is writing into the folder.)
    if (!e.is_regular_file(size_ec) || name == kMetadataName || name == kLockName || referenced.count(name)) continue;
    report.notes.push_back(StrCat("file ", name, " (", e.file_size(size_ec),
                                  " bytes) is not part of the checkpoint (the metadata does not name it)"));
  }
  return report;
}

}  // namespace dcpp
