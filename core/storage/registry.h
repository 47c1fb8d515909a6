// The checkpoint formats dcpp reads and writes, by name. Each format lives in its own folder
// under core/storage/ and registers itself there, in its own .cc, with a static
// FormatRegistration (its library is built with alwayslink); //core/storage:formats links
// every one. Adding a format is a new folder and one line in core/storage/BUILD.
// core/storage/open.h finds the format of a path and opens readers and writers through this.
//
// Thread-safety: registration happens during static initialization; lookups afterwards are
// read-only and may run on any thread.
#pragma once

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/storage/storage.h"

namespace dcpp {

// A format by its registered name. Cheap to copy; the name must outlive it (a string literal,
// or a registered name as ParseFormat returns).
class Format {
 public:
  constexpr explicit Format(const char* name) : name_(name) {}
  const char* name() const { return name_; }
  bool operator==(const Format& o) const { return std::strcmp(name_, o.name_) == 0; }
  bool operator!=(const Format& o) const { return !(*this == o); }

  // The formats that ship with dcpp (core/storage/native, dcp, safetensors).
  static const Format kNative, kDcp, kSafetensors;

 private:
  const char* name_;
};

inline constexpr Format Format::kNative{"native"};
inline constexpr Format Format::kDcp{"dcp"};
inline constexpr Format Format::kSafetensors{"safetensors"};

// What a format offers. Every function is called with a path that exists.
struct FormatBackend {
  const char* name;  // "native": what ParseFormat and --format accept
  // Detection order: the first format (lowest rank, then name) whose `detect` accepts a path
  // has it. A format that recognises a subset of another's paths ranks before it.
  int rank = 0;
  // What a checkpoint of the format is recognised by, for the error when nothing is: a file in
  // the folder (".metadata") or a pattern of files ("*.safetensors").
  std::string marker;
  std::function<bool(const std::string& path)> detect;
  std::function<std::unique_ptr<StorageReader>(const std::string& path)> open_reader;
  // Empty for a format that is not a save target; `no_writer` then says what to use instead.
  std::function<std::unique_ptr<StorageWriter>(const std::string& path)> open_writer;
  std::string no_writer;
};

class FormatRegistration {
 public:
  // Aborts the program (at start-up) if the name is taken.
  explicit FormatRegistration(FormatBackend backend);
};

// Every registered format, in detection order.
std::vector<const FormatBackend*> RegisteredFormats();

// The format named `name`, or null.
const FormatBackend* FindFormat(const std::string& name);

}  // namespace dcpp
