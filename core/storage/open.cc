#include "core/storage/open.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <vector>

#include "core/base/error.h"

namespace dcpp {
namespace {

namespace fs = std::filesystem;

std::string JoinNames(const std::vector<std::string>& names, const char* last) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? last : ", ";
    out += names[i];
  }
  return out;
}

// The backend of a registered format; an unknown name gets ParseFormat's error, which lists
// the formats there are.
const FormatBackend& Backend(Format format) {
  return *FindFormat(ParseFormat(format.name()).name());
}

}  // namespace

Format DetectFormat(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  DCPP_CHECK(fs::exists(st), "no checkpoint at ", path, ": no such file or folder");
  const std::vector<const FormatBackend*> formats = RegisteredFormats();
  for (const FormatBackend* b : formats) {
    if (b->detect(path)) return Format(b->name);
  }
  // What each format looks for: a file in the folder, or a pattern of files.
  std::map<std::string, std::vector<std::string>> by_marker;
  for (const FormatBackend* b : formats) by_marker[b->marker].push_back(b->name);
  std::vector<std::string> missing, patterns;
  for (const auto& [marker, names] : by_marker) {
    if (marker.find('*') == std::string::npos) {
      missing.push_back(StrCat(path, "/", marker, " is missing (", JoinNames(names, " or "), ")"));
    } else {
      patterns.push_back(marker);
    }
  }
  if (!patterns.empty()) missing.push_back(StrCat("there are no ", JoinNames(patterns, " or "), " files"));
  DCPP_CHECK(!fs::is_directory(st), "no checkpoint in ", path, ": ", JoinNames(missing, " and "));
  throw Error(StrCat("no checkpoint at ", path, ": not a folder holding one",
                     patterns.empty() ? "" : ", nor a ", JoinNames(patterns, " or "), patterns.empty() ? "" : " file"));
}

std::unique_ptr<StorageReader> OpenReader(const std::string& path) {
  return Backend(DetectFormat(path)).open_reader(path);
}

Format ParseFormat(const std::string& name) {
  if (const FormatBackend* b = FindFormat(name)) return Format(b->name);
  std::vector<std::string> names;
  for (const FormatBackend* b : RegisteredFormats()) names.push_back(b->name);
  std::sort(names.begin(), names.end());
  throw Error(StrCat("unknown checkpoint format '", name, "' (expected ", JoinNames(names, " or "), ")"));
}

std::unique_ptr<StorageWriter> OpenWriter(const std::string& path, Format format) {
  const FormatBackend& b = Backend(format);
  DCPP_CHECK(b.open_writer, "cannot save a sharded checkpoint as ", b.name, " in ", path, " (", b.no_writer, ")");
  return b.open_writer(path);
}

}  // namespace dcpp
