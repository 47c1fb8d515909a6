// CommitFiles(): the commit of files written under temporary names in one folder, shared by
// the formats that write into a folder (FileSystemWriter renames .metadata.tmp; the
// safetensors writer renames every shard, then the index). In order:
//
//   SyncDir(dir)                the temporaries' entries durable before any is renamed
//   Rename(from, to) ...        each temporary into place, in the order given
//   SyncDir(dir)                the renames durable: the commit point
//   Remove(...)                 the format's own files that the new files do not use
//
// A failure before the first rename leaves the folder as it was committed before: it is
// thrown as a dcpp::Error (messages.not_started). A failure after some renames leaves some
// new files in place and the rest not: it is thrown as a PartialCommitError
// (messages.partial). After the last rename nothing throws: what fails is a warning in the
// CommitReport. When the second SyncDir fails the renames may not survive a power loss, so
// the older files are kept (nothing is removed).
//
// The temporaries are the caller's: it removes those left after a failure. Every message is
// the caller's (its words name its format); each gets the cause, the failure's ErrorMessage.
//
// Thread-safety: one commit per folder at a time (the caller holds the folder's lock).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/storage/env.h"
#include "core/storage/storage.h"

namespace dcpp {

// Thrown by CommitFiles when a rename failed after others had been made.
class PartialCommitError : public Error {
 public:
  using Error::Error;
};

// One temporary put into place: plain names in the folder.
struct CommitRename {
  std::string from;
  std::string to;
};

// What a commit says, in the caller's words. An empty function says it in generic words.
struct CommitMessages {
  // Nothing was renamed. Default: the cause unchanged.
  std::function<std::string(const std::string& cause)> not_started;
  // `in_place` of `total` renames were made, the rest not.
  std::function<std::string(size_t in_place, size_t total, const std::string& cause)> partial;
  // The folder could not be synced after the renames; the older files were kept.
  std::function<std::string(const std::string& cause)> not_durable;
  // `own_files` failed.
  std::function<std::string(const std::string& cause)> cannot_list;
  // The file `name` could not be removed.
  std::function<std::string(const std::string& name, const std::string& cause)> cannot_remove;
};

struct CommitPlan {
  std::string dir;                    // the folder ("dir/name" paths)
  std::vector<CommitRename> renames;  // in order; at least one
  // The format's own files in `dir`, asked for after the commit point; those neither in
  // `keep` nor renamed into place are removed. Default: none (nothing is removed).
  std::function<std::vector<std::string>()> own_files;
  std::vector<std::string> keep;
  CommitMessages messages;
};

// Commits `plan` through `env` as described above.
CommitReport CommitFiles(Env* env, const CommitPlan& plan);

}  // namespace dcpp
