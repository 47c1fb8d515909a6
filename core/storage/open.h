// Opening a checkpoint whatever its format: which format the checkpoint at a path is in, and a
// StorageReader or StorageWriter for it, through the formats registered in
// core/storage/registry.h. The command-line tools read their sources through OpenReader, so a
// safetensors file or folder works wherever a native checkpoint folder does.
//
//   auto reader = dcpp::OpenReader("/models/llama");   // native, PyTorch DCP or safetensors
//   dcpp::load(sd, *reader);
//
// Thread-safety: pure functions (they look at the file system).
#pragma once

#include <memory>
#include <string>

#include "core/storage/registry.h"
#include "core/storage/storage.h"

namespace dcpp {

// "native", "dcp", "safetensors", ...: the format's registered name.
inline const char* FormatName(Format f) { return f.name(); }

// Which format the checkpoint at `path` is in: the first registered format that recognises it
// (native: a folder with a dcpp `.metadata`; dcp: a folder whose `.metadata` is a pickle, as
// PyTorch's torch.distributed.checkpoint writes; safetensors: a `.safetensors` file, or a
// folder of them). Throws dcpp::Error naming the path, and what was looked for, if none does.
Format DetectFormat(const std::string& path);

// A reader for the checkpoint at `path`, whatever its format. Throws dcpp::Error naming the
// path if there is no checkpoint there.
std::unique_ptr<StorageReader> OpenReader(const std::string& path);

// A registered format by name; throws dcpp::Error listing the registered ones otherwise.
Format ParseFormat(const std::string& name);

// A writer of `format` into the folder `path` (native: FileSystemWriter; dcp: DcpWriter).
// Throws dcpp::Error for a format that is no save target (safetensors is an export:
// core/tools/safetensors_export.h).
std::unique_ptr<StorageWriter> OpenWriter(const std::string& path, Format format);

}  // namespace dcpp
