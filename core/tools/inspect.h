// Looking inside a native dcpp checkpoint without loading it: a human-readable listing and a
// stable JSON description of the metadata (InspectText, InspectJson). The full check of the
// data against it (Verify) is in verify.h.
//
// Used by the command-line tools scripts/inspect and scripts/verify; the JSON shape is
// documented in README.md ("Inspect and verify") and below. Needs no LibTorch headers.
//
// Thread-safety: the functions are independent and keep no state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/format/metadata.h"  // ChunkBox
#include "core/format/metadata.pb.h"
#include "core/model/box.h"

namespace dcpp {

// A checksum as written by the tools: 16 lowercase hex digits, e.g. "00f3a9c2d4e5b617".
std::string ChecksumHex(uint64_t checksum);

// What kind of checkpoint `md` was read from, for a heading: `format` is the registered name of
// its format (core/storage/registry.h; DetectFormat(path).name()). "dcpp checkpoint, format
// 1.1" (native), "PyTorch DCP checkpoint" (dcp), "safetensors checkpoint", or "<format>
// checkpoint" for any other.
std::string FormatTitle(const proto::Metadata& md, const std::string& format);

// A key as the table shows it: as it is, or JSON-quoted ("", "\t", " x") when it is empty,
// starts or ends with a space, starts with '"' or holds a control character, so that every
// key is visible and none looks like another.
std::string DisplayKey(const std::string& key);

// A table of the whole checkpoint: header (what it is, as FormatTitle says, then creator,
// world size, mesh, checksum algorithm, files, bytes), each key in sorted order with its
// dtype, shape, bytes and chunks (box, file, byte offset, length), the bytes entries, the
// planner data, and totals. `format` as for FormatTitle.
std::string InspectText(const proto::Metadata& md, const std::string& format = "native");

// The same as JSON. Shape (stable; keys of every object sorted; integers are numbers):
//   {"format": "dcpp", "format_version": "1.0", "creator": str, "world_size": int,
//    "mesh": [int], "checksum_algorithm": "xxh3_64",
//    "totals": {"tensors", "bytes_entries", "chunks", "bytes", "files": int},
//    "files": [{"name": str, "bytes": int, "entries": int}],             sorted by name
//    "tensors": [{"key": str, "dtype": str, "shape": [int], "numel": int,
//                 "bytes": int,                            sum of the chunks' lengths
//                 "chunks": [{"offsets": [int], "sizes": [int], "file": str,
//                             "offset": int, "length": int, "checksum": hex16}]}],
//    "bytes": [{"key": str, "file": str, "offset": int, "length": int, "checksum": hex16}],
//    "planner_data": {str: str}}
// "format" is "dcpp" for a native checkpoint, else the format's registered name ("dcp",
// "safetensors"); "format_version" is that of the metadata dcpp reads (for other formats, the
// version of the description dcpp makes of theirs).
// "tensors" and "bytes" are sorted by key; chunks keep their order in the metadata. "bytes"
// totals count every chunk and blob; "files" counts the data files the metadata names.
nlohmann::json InspectJson(const proto::Metadata& md, const std::string& format = "native");

// The line inspect and verify print, loudly, for a native checkpoint whose metadata says its
// checksum algorithm is "none": nothing can check its data.
constexpr char kNoChecksumsWarning[] = "checksums: NONE — data is not verified";

// Warnings about the checkpoint that its metadata alone shows: for a native checkpoint
// (`native`: dcpp's own format, where checksums are the rule) whose checksum algorithm is
// "none", kNoChecksumsWarning and why. Empty when there is nothing to warn about.
std::vector<std::string> InspectWarnings(const proto::Metadata& md, bool native);

}  // namespace dcpp
