// Prints what a dcpp checkpoint (or a safetensors file or folder) holds, from its metadata
// alone: every key with its dtype, shape, bytes and chunks (box, data file, byte range), as a
// table or as JSON (the shape is documented in core/tools/inspect.h and README.md). A PyTorch DCP
// checkpoint's bytes entries are torch.save'd Python objects: their values are shown too
// ("value" in the JSON's bytes entries).
//
//   bazel run //scripts:inspect -- DIR [--json]
//
// Exit codes: 0 printed; 1 no folder, no .metadata or a corrupt one; 2 bad command line.
#include <cstdio>
#include <map>
#include <memory>
#include <filesystem>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/open.h"
#include "core/tools/inspect.h"
#include "scripts/cli.h"

namespace {

// The Python value of every blob that is a torch.save archive (what PyTorch DCP stores for a
// non-tensor entry): its repr, or "<opaque: ...>" for an object dcpp does not decode. Blobs
// whose pickle names globals outside the safe list (dcp.load would call them) get a warning
// naming them in `warnings`.
std::map<std::string, std::string> BlobValues(dcpp::StorageReader& reader, const dcpp::proto::Metadata& md,
                                              std::vector<std::string>& warnings) {
  std::map<std::string, std::string> out;
  std::map<std::string, std::unique_ptr<dcpp::FileSource>> open;
  for (const auto& b : md.bytes()) {
    if (b.length() > (64u << 20)) continue;  // a listing reads small objects only
    auto& src = open[b.file()];
    if (!src) src = reader.Open(b.file());
    std::string data(b.length(), '\0');
    src->ReadAt(b.offset(), data.data(), data.size());
    if (!dcpp::torch_archive::IsTorchSaveArchive(data)) continue;
    try {
      out[b.fqn()] = dcpp::pickle::Repr(*dcpp::torch_archive::DecodeObject(data, b.fqn()), 120);
      continue;
    } catch (const dcpp::Error& e) {
      out[b.fqn()] = std::string("<opaque: ") + e.what() + ">";
    }
    const std::string what = "bytes key '" + b.fqn() + "' in " + b.file();
    try {
      std::string names;
      for (const std::string& g : dcpp::torch_archive::UnsafeGlobals(data, what)) {
        names += (names.empty() ? "" : ", ") + g;
      }
      if (!names.empty()) {
        warnings.push_back(what + ": its pickle names " + names +
                           ", outside the globals a state dict uses; PyTorch's dcp.load would import "
                           "and call it (dcpp never runs it)");
      }
    } catch (const dcpp::Error& e) {
      warnings.push_back(what + ": its pickle cannot be checked for unsafe globals (" + e.what() +
                         "); PyTorch's dcp.load would run whatever it holds");
    }
  }
  return out;
}

}  // namespace

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
    dcpp::VerifyOwnChecksums(*reader, false);  // a listing; `verify` checks the data
    const dcpp::proto::Metadata md = dcpp::ParseMetadata(reader->ReadMetadata(), reader->Describe());
    const dcpp::Format format = dcpp::DetectFormat(path);
    std::vector<std::string> warnings = dcpp::InspectWarnings(md, format == dcpp::Format::kNative);
    const std::map<std::string, std::string> values = BlobValues(*reader, md, warnings);
    std::string out;
    if (json) {
      nlohmann::json j = dcpp::InspectJson(md, format.name());
      if (!warnings.empty()) j["warnings"] = warnings;
      for (auto& b : j["bytes"]) {
        auto it = values.find(b["key"].get<std::string>());
        if (it != values.end()) b["value"] = it->second;
      }
      out = j.dump(2) + "\n";
    } else {
      for (const std::string& w : warnings) out += w.rfind("checksums:", 0) == 0 ? w + "\n" : "warning: " + w + "\n";
      out += dcpp::InspectText(md, format.name());
      if (!values.empty()) {
        out += "\nbytes values (torch.save'd Python objects):\n";
        for (const auto& [key, v] : values) out += "  " + dcpp::DisplayKey(key) + " = " + v + "\n";
      }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return dcpp::cli::kOk;
  });
}
