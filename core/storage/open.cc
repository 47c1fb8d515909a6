#include "core/storage/open.h"

#include <cstdio>
#include <filesystem>

#include "core/base/error.h"
#include "core/storage/dcp/dcp.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/safetensors/safetensors.h"

namespace dcpp {
namespace {

namespace fs = std::filesystem;

// A pickle (protocol 2 and up) starts with the PROTO opcode; dcpp's protobuf metadata never
// does (its first byte is a field tag, 0x08 for format_major).
constexpr int kPickleProto = 0x80;

// The first byte of `path`, or -1 if it is empty or unreadable.
int FirstByte(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return -1;
  const int c = std::fgetc(f);
  std::fclose(f);
  return c == EOF ? -1 : c;
}

}  // namespace

const char* FormatName(Format f) {
  switch (f) {
    case Format::kNative:
      return "native";
    case Format::kDcp:
      return "dcp";
    case Format::kSafetensors:
      return "safetensors";
  }
  return "unknown";
}

Format DetectFormat(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  DCPP_CHECK(fs::exists(st), "no checkpoint at ", path, ": no such file or folder");
  const std::string metadata = path + "/.metadata";
  if (fs::is_directory(st) && fs::exists(metadata, ec)) {
    return FirstByte(metadata) == kPickleProto ? Format::kDcp : Format::kNative;
  }
  if (IsSafetensors(path)) return Format::kSafetensors;
  DCPP_CHECK(!fs::is_directory(st), "no checkpoint in ", path, ": ", metadata,
             " is missing (dcpp or PyTorch DCP) and there are no *.safetensors files");
  throw Error(StrCat("no checkpoint at ", path,
                     ": not a folder holding one, nor a .safetensors file"));
}

std::unique_ptr<StorageReader> OpenReader(const std::string& path) {
  switch (DetectFormat(path)) {
    case Format::kNative:
      return std::make_unique<FileSystemReader>(path);
    case Format::kDcp:
      return std::make_unique<DcpReader>(path);
    case Format::kSafetensors:
      return std::make_unique<SafetensorsReader>(path);
  }
  throw Error(StrCat("checkpoint ", path, ": unknown format"));
}

Format ParseFormat(const std::string& name) {
  if (name == "native") return Format::kNative;
  if (name == "dcp") return Format::kDcp;
  if (name == "safetensors") return Format::kSafetensors;
  throw Error(StrCat("unknown checkpoint format '", name, "' (expected native, dcp or safetensors)"));
}

std::unique_ptr<StorageWriter> OpenWriter(const std::string& path, Format format) {
  switch (format) {
    case Format::kNative:
      return std::make_unique<FileSystemWriter>(path);
    case Format::kDcp:
      return std::make_unique<DcpWriter>(path);
    case Format::kSafetensors:
      break;
  }
  throw Error(StrCat("cannot save a sharded checkpoint as ", FormatName(format), " in ", path,
                     " (export consolidated safetensors with //scripts:export_safetensors)"));
}

}  // namespace dcpp
