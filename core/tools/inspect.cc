// InspectText / InspectJson describe the metadata alone: a table of the header, the keys and
// their chunks, the bytes entries, the planner data and the files, or the same as JSON.
#include "core/tools/inspect.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/format/metadata.pb.h"
#include "core/model/box.h"
#include "core/tools/inspect_util.h"

namespace dcpp {

std::string ChecksumHex(uint64_t checksum) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(checksum));
  return buf;
}

namespace {

int64_t StoredBytes(const proto::TensorMeta& t) {
  int64_t n = 0;
  for (const auto& c : t.chunks()) n += static_cast<int64_t>(c.length());
  return n;
}

// Chunks and blobs together, and their bytes.
struct Totals {
  int64_t entries = 0;
  int64_t bytes = 0;
};

Totals TotalsOf(const std::map<std::string, FileUse>& files) {
  Totals t;
  for (const auto& [name, use] : files) {
    t.entries += use.entries;
    t.bytes += use.bytes;
  }
  return t;
}

// Characters of UTF-8 `s` (bytes that do not continue a sequence), for aligning columns.
size_t Width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::string DisplayKey(const std::string& key) {
  bool quote = key.empty() || key.front() == ' ' || key.back() == ' ' || key.front() == '"';
  for (unsigned char c : key) quote = quote || c < 0x20 || c == 0x7f;
  return quote ? nlohmann::json(key).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) : key;
}

namespace {

// Rows of cells printed with each column padded to its widest cell.
class Table {
 public:
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::vector<std::string> Lines(const std::string& indent) const {
    std::vector<size_t> width;
    for (const auto& r : rows_) {
      width.resize(std::max(width.size(), r.size()), 0);
      for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], Width(r[i]));
    }
    std::vector<std::string> lines;
    for (const auto& r : rows_) {
      std::string line = indent;
      for (size_t i = 0; i < r.size(); ++i) {
        line += r[i];
        if (i + 1 < r.size()) line += std::string(width[i] - Width(r[i]) + 2, ' ');
      }
      lines.push_back(line);
    }
    return lines;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace

std::string FormatTitle(const proto::Metadata& md, const std::string& format) {
  if (format == "native") return StrCat("dcpp checkpoint, format ", md.format_major(), ".", md.format_minor());
  if (format == "dcp") return "PyTorch DCP checkpoint";  // (its metadata version: the creator line)
  if (format == "torchsave") return "torch.save checkpoint (plain torch.save files)";
  return format + " checkpoint";
}

std::string InspectText(const proto::Metadata& md, const std::string& format) {
  const auto files = FilesOf(md);
  const Totals totals = TotalsOf(files);
  std::ostringstream os;
  os << FormatTitle(md, format) << "\n";
  Table header;
  header.Add({"creator", md.creator()});
  header.Add({"world size", std::to_string(md.world_size())});
  header.Add({"mesh", md.mesh_shape().empty() ? "none" : ListString(md.mesh_shape())});
  header.Add({"checksum", HasChecksums(md) ? md.checksum_algorithm()
                                            : StrCat(md.checksum_algorithm(),
                                                     "  (WARNING: NO CHECKSUMS: corrupt data cannot be detected)")});
  header.Add({"data files", StrCat(files.size(), " (", totals.bytes, " bytes)")});
  for (const auto& line : header.Lines("  ")) os << line << "\n";

  const auto tensors = SortedByKey(md.tensors());
  os << "\ntensors (" << tensors.size() << "):\n";
  Table keys, chunks;
  keys.Add({"key", "dtype", "shape", "bytes", "chunks"});
  for (const auto* t : tensors) {
    keys.Add({DisplayKey(t->fqn()), t->dtype(), ListString(t->shape()), std::to_string(StoredBytes(*t)),
              std::to_string(t->chunks_size())});
    for (const auto& c : t->chunks()) {
      chunks.Add({ChunkBox(c).ToString(), c.file(), StrCat("offset ", c.offset()),
                  StrCat("length ", c.length())});
    }
  }
  // Each key's row, then its chunks' rows (aligned among themselves) below it.
  const auto key_lines = keys.Lines("  ");
  const auto chunk_lines = chunks.Lines("      ");
  os << key_lines[0] << "\n";
  size_t next_chunk = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    os << key_lines[i + 1] << "\n";
    for (int c = 0; c < tensors[i]->chunks_size(); ++c) os << chunk_lines[next_chunk++] << "\n";
  }

  const auto blobs = SortedByKey(md.bytes());
  if (!blobs.empty()) {
    os << "\nbytes entries (" << blobs.size() << "):\n";
    Table t;
    for (const auto* b : blobs) {
      t.Add({DisplayKey(b->fqn()), b->file(), StrCat("offset ", b->offset()), StrCat("length ", b->length())});
    }
    for (const auto& line : t.Lines("  ")) os << line << "\n";
  }
  if (!md.planner_data().empty()) {
    os << "\nplanner data:\n";
    const std::map<std::string, std::string> sorted(md.planner_data().begin(), md.planner_data().end());
    Table t;
    for (const auto& [k, v] : sorted) t.Add({k, v});
    for (const auto& line : t.Lines("  ")) os << line << "\n";
  }
  os << "\nfiles:\n";
  Table f;
  for (const auto& [name, use] : files) {
    f.Add({name, StrCat(use.bytes, " bytes"), StrCat(use.entries, " entries")});
  }
  for (const auto& line : f.Lines("  ")) os << line << "\n";
  os << "\ntotal: " << tensors.size() << " tensors, " << blobs.size() << " bytes entries, "
     << totals.entries - static_cast<int64_t>(blobs.size()) << " chunks, " << totals.bytes
     << " bytes in " << files.size() << " files\n";
  return os.str();
}

nlohmann::json InspectJson(const proto::Metadata& md, const std::string& format) {
  using nlohmann::json;
  const auto files = FilesOf(md);
  const Totals totals = TotalsOf(files);
  json out;
  out["format"] = format == "native" ? "dcpp" : format;
  out["format_version"] = StrCat(md.format_major(), ".", md.format_minor());
  out["creator"] = md.creator();
  out["world_size"] = md.world_size();
  out["mesh"] = std::vector<int64_t>(md.mesh_shape().begin(), md.mesh_shape().end());
  out["checksum_algorithm"] = md.checksum_algorithm();
  out["totals"] = {{"tensors", md.tensors_size()},
                   {"bytes_entries", md.bytes_size()},
                   {"chunks", totals.entries - md.bytes_size()},
                   {"bytes", totals.bytes},
                   {"files", files.size()}};
  out["files"] = json::array();
  for (const auto& [name, use] : files) {
    out["files"].push_back({{"name", name}, {"bytes", use.bytes}, {"entries", use.entries}});
  }
  out["tensors"] = json::array();
  for (const auto* t : SortedByKey(md.tensors())) {
    json chunks = json::array();
    for (const auto& c : t->chunks()) {
      const Box box = ChunkBox(c);
      chunks.push_back({{"offsets", box.offsets},
                        {"sizes", box.sizes},
                        {"file", c.file()},
                        {"offset", c.offset()},
                        {"length", c.length()},
                        {"checksum", ChecksumHex(c.checksum())}});
    }
    out["tensors"].push_back({{"key", t->fqn()},
                              {"dtype", t->dtype()},
                              {"shape", std::vector<int64_t>(t->shape().begin(), t->shape().end())},
                              {"numel", NumelOf(*t)},
                              {"bytes", StoredBytes(*t)},
                              {"chunks", std::move(chunks)}});
  }
  out["bytes"] = json::array();
  for (const auto* b : SortedByKey(md.bytes())) {
    out["bytes"].push_back({{"key", b->fqn()},
                            {"file", b->file()},
                            {"offset", b->offset()},
                            {"length", b->length()},
                            {"checksum", ChecksumHex(b->checksum())}});
  }
  out["planner_data"] = json::object();
  for (const auto& [k, v] : md.planner_data()) out["planner_data"][k] = v;
  return out;
}

std::vector<std::string> InspectWarnings(const proto::Metadata& md, bool native) {
  std::vector<std::string> out;
  if (native && !HasChecksums(md)) {
    out.push_back(StrCat(kNoChecksumsWarning, " (the metadata says checksum algorithm '",
                         md.checksum_algorithm(), "': no chunk or blob of this dcpp checkpoint can be "
                         "checked; load, convert, diff and export refuse it unless checksum verification is off)"));
  }
  return out;
}

}  // namespace dcpp
