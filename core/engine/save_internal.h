// The coordinator's part of a save, shared by save() and convert(): validating a planner's
// global plan and placing its items, and assembling the metadata from the write results.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/format/metadata.pb.h"
#include "core/format/plan.pb.h"
#include "core/storage/storage.h"

namespace dcpp::internal {

// Checks the planner's global plan against the local plans (every item written once, plain
// new file names, one rank per file, nothing dropped), then places every item in its file at
// a 4 KiB-aligned offset, leaving room for the frame `writer` wraps around each item.
// `committed`: the files of the checkpoint already in the folder.
void ValidateAndPlace(const std::vector<proto::SavePlan>& local,
                      std::vector<proto::SavePlan>& global,
                      const std::vector<std::string>& committed, const std::string& planner,
                      const StorageWriter& writer);

// The metadata of a checkpoint from every rank's serialized proto::WriteResults; `files`
// receives the data files it references.
proto::Metadata BuildMetadata(const std::vector<std::string>& results, const std::string& creator,
                              int world, const std::map<std::string, std::string>& data,
                              std::vector<std::string>* files);

}  // namespace dcpp::internal
