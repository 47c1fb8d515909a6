// Opening a checkpoint whatever its format: which format the checkpoint at a path is in, and a
// StorageReader for it. The command-line tools read their sources through OpenReader, so a
// safetensors file or folder works wherever a native checkpoint folder does.
//
//   auto reader = dcpp::OpenReader("/models/llama");   // native, PyTorch DCP or safetensors
//   dcpp::load(sd, *reader);
//
// Thread-safety: pure functions (they look at the file system).
#pragma once

#include <memory>
#include <string>

#include "core/storage/storage.h"

namespace dcpp {

enum class Format { kNative, kDcp, kSafetensors };

// "native", "dcp", "safetensors".
const char* FormatName(Format f);

// Which format the checkpoint at `path` is in:
//   kNative       a folder with a dcpp `.metadata` (protobuf)
//   kDcp          a folder whose `.metadata` is a pickle (PyTorch torch.distributed.checkpoint)
//   kSafetensors  a `.safetensors` file, or a folder of them (IsSafetensors)
// Throws dcpp::Error naming the path if none.
Format DetectFormat(const std::string& path);

// A reader for the checkpoint at `path`, whatever its format. Throws dcpp::Error naming the
// path if there is no checkpoint there or its format is not supported.
std::unique_ptr<StorageReader> OpenReader(const std::string& path);

// Format from its name ("native", "dcp", "safetensors"); throws dcpp::Error otherwise.
Format ParseFormat(const std::string& name);

// A writer of `format` into the folder `path`: native (FileSystemWriter) or PyTorch DCP
// (DcpWriter). Safetensors is an export (core/tools/safetensors_export.h), not a save target.
std::unique_ptr<StorageWriter> OpenWriter(const std::string& path, Format format);

}  // namespace dcpp
