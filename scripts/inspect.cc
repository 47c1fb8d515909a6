// Prints what a dcpp checkpoint (or a safetensors file or folder) holds, from its metadata
// alone: every key with its dtype, shape, bytes and chunks (box, data file, byte range), as a
// table or as JSON (the shape is documented in core/inspect.h and README.md).
//
//   bazel run //scripts:inspect -- DIR [--json]
//
// Exit codes: 0 printed; 1 no folder, no .metadata or a corrupt one; 2 bad command line.
#include <cstdio>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/inspect.h"
#include "core/metadata.h"
#include "core/storage/open.h"
#include "scripts/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"Print the keys, shapes and chunks of a dcpp checkpoint", "inspect"};
  std::string dir;
  bool json = false;
  app.add_option("DIR", dir, "checkpoint folder (holds .metadata)")->required();
  app.add_flag("--json", json, "print JSON instead of a table");
  return dcpp::cli::Run(app, argc, argv, [&] {
    const std::string path = dcpp::cli::UserPath(dir);
    DCPP_CHECK(std::filesystem::exists(path), "no checkpoint folder ", path);
    const auto reader = dcpp::OpenReader(path);
    const dcpp::proto::Metadata md = dcpp::ParseMetadata(reader->ReadMetadata(), reader->Describe());
    const std::string out = json ? dcpp::InspectJson(md).dump(2) + "\n" : dcpp::InspectText(md);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return dcpp::cli::kOk;
  });
}
