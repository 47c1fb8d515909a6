#include "core/storage/commit.h"

#include <exception>
#include <set>

namespace dcpp {

CommitReport CommitFiles(Env* env, const CommitPlan& plan) {
  const CommitMessages& m = plan.messages;
  const std::string& dir = plan.dir;
  const size_t total = plan.renames.size();
  DCPP_CHECK(total > 0, "commit into ", dir, ": no file to put in place");
  size_t in_place = 0;
  try {
    // The temporaries were fsynced by their writers; their directory entries must be durable
    // before any is renamed.
    env->SyncDir(dir);
    for (const CommitRename& r : plan.renames) {
      env->Rename(dir + "/" + r.from, dir + "/" + r.to);
      ++in_place;
    }
  } catch (const std::exception& e) {
    const std::string cause = ErrorMessage(e);
    if (in_place == 0) throw Error(m.not_started ? m.not_started(cause) : cause);
    throw PartialCommitError(m.partial ? m.partial(in_place, total, cause)
                                       : StrCat("commit into ", dir, " is incomplete: ", in_place, " of ", total,
                                                " files are in place, the rest are not (", cause, ")"));
  }
  // Committed. From here on nothing throws: the new files are in place.
  CommitReport report;
  try {
    env->SyncDir(dir);
  } catch (const std::exception& e) {
    // The renames may not survive a power loss; the older files must then stay for the older
    // metadata or index that could come back. The next commit removes them.
    const std::string cause = ErrorMessage(e);
    report.warnings.push_back(m.not_durable ? m.not_durable(cause)
                                            : StrCat("the commit of ", dir, " may not survive a power loss (",
                                                     cause, "); older files were kept"));
    return report;
  }
  if (!plan.own_files) return report;
  std::set<std::string> kept(plan.keep.begin(), plan.keep.end());
  for (const CommitRename& r : plan.renames) kept.insert(r.to);
  std::vector<std::string> own;
  try {
    own = plan.own_files();
  } catch (const std::exception& e) {
    const std::string cause = ErrorMessage(e);
    report.warnings.push_back(m.cannot_list ? m.cannot_list(cause)
                                            : StrCat("cannot list ", dir, " to remove older files: ", cause));
    return report;
  }
  for (const std::string& name : own) {
    if (kept.count(name)) continue;
    try {
      env->Remove(dir + "/" + name);
    } catch (const std::exception& e) {
      const std::string cause = ErrorMessage(e);
      report.warnings.push_back(m.cannot_remove ? m.cannot_remove(name, cause)
                                                : StrCat("cannot remove ", dir, "/", name, ": ", cause));
    }
  }
  return report;
}

}  // namespace dcpp
