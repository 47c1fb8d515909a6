// PyTorch DCP's format joins dcpp's storage registry: a folder whose .metadata is a pickle is
// read by DcpReader and written by DcpWriter. The rest of the format is in dcp_*.cc (see
// dcp.h).
#include "core/storage/dcp/dcp.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <system_error>

#include "core/format/file_names.h"
#include "core/storage/registry.h"

namespace dcpp {

bool IsDcpMetadata(const std::string& metadata) {
  return !metadata.empty() && static_cast<uint8_t>(metadata[0]) == 0x80;
}

namespace {

// A folder whose .metadata is a pickle (its first byte, PROTO: dcpp's protobuf never starts so).
const FormatRegistration kDcpFormat({
    Format::kDcp.name(), /*rank=*/0, kMetadataName,
    [](const std::string& path) {
      std::error_code ec;
      if (!std::filesystem::is_directory(path, ec)) return false;
      std::ifstream f(path + "/" + kMetadataName, std::ios::binary);
      char first = 0;
      return f.get(first) && IsDcpMetadata(std::string(1, first));
    },
    [](const std::string& path) -> std::unique_ptr<StorageReader> { return std::make_unique<DcpReader>(path); },
    [](const std::string& path) -> std::unique_ptr<StorageWriter> { return std::make_unique<DcpWriter>(path); },
    ""});

}  // namespace

}  // namespace dcpp
