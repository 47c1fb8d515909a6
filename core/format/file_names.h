// The rules for file names inside a checkpoint folder, shared by the format (metadata
// validation) and the storage backends. Pure functions; thread-safe.
#pragma once

#include <string>

namespace dcpp {

// Names reserved in a checkpoint folder.
constexpr char kMetadataName[] = ".metadata";
constexpr char kMetadataTmpName[] = ".metadata.tmp";
constexpr char kLockName[] = ".dcpp.lock";

// True for a file name that metadata may mention: a plain name, no '/', not "." or "..", no
// NUL or '\', not empty. Readers refuse anything else.
bool IsPlainFileName(const std::string& name);

// True for the names reserved in a checkpoint folder (.metadata, .metadata.tmp, .dcpp.lock):
// never data, so metadata that names one as a chunk's or blob's file is refused.
bool IsReservedFileName(const std::string& name);

// True for a data file name a writer may create: "__<rank>_<n>.distcp" (decimal numbers below
// 2^31). Reserved names (.metadata, its temporary, the lock) and other files never match, so a
// planner cannot overwrite them and debris removal never touches a user's file.
bool IsDataFileName(const std::string& name);

// True for the temporary of a data file: its name followed by a suffix ending in ".tmp"
// (e.g. "__0_1.distcp.zstd.tmp", which a compressing DCP commit writes and renames over the
// file). Never part of a committed checkpoint: debris when found.
bool IsDataFileTempName(const std::string& name);

// Splits a data file name "__<rank>_<n>.distcp" (dcpp's and PyTorch DCP's) into its rank and
// number; false for any other name (also for numbers of 2^31 or more).
bool ParseDataFileName(const std::string& name, long* rank, long* n);

}  // namespace dcpp
