// The Lua planners: every policy decision of a save or load, made by a script.
//
// SavePlanner and LoadPlanner each own a sandboxed LuaVm running one script: the embedded
// default (planners/default_save.lua, planners/default_load.lua) or a user's file. The engine
// calls them at the points of DESIGN.md §2 and validates what they return; a Lua error or a
// malformed answer becomes a dcpp::Error naming the script (and line, for Lua errors).
//
// Scripts see a global `dcpp` table of helpers (overlap, box_key, numel, sorted_keys) and a `ctx`
// table per call (rank, world_size, mesh, thread_count, allow_partial_load, first_file_index,
// comm_device, options). Not thread-safe: one planner per thread.
//
// Scripts are user code, so every call into one is bounded (PlannerLimits, from the
// planner_instruction_limit / planner_memory_limit options): an endless loop stops at the
// instruction limit (default 10^10 per call), an allocation bomb at the memory ceiling
// (default 8 GiB per state), runaway recursion at the Lua stack's limit or, through C
// functions such as string.gsub callbacks, before the native stack runs out. Each ends in a
// dcpp::Error naming the script, the limit and, where known, the line (LuaVm, lua_vm.h). The
// engine reads what a script returns with raw access, so metatables on returned tables are
// ignored; reading the module table P itself (which may have an __index) runs protected and
// bounded too. Planning happens before anything is written, so a stopped planner leaves the
// destination as it was.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/format/metadata.pb.h"
#include "core/format/plan.pb.h"
#include "core/model/box.h"
#include "core/model/layout.h"
#include "core/planner/limits.h"

namespace dcpp {

class LuaVm;

struct PlanContext {
  int rank = 0;
  int world_size = 1;
  std::vector<int64_t> mesh;
  int thread_count = 1;
  bool allow_partial_load = false;
  int first_file_index = 0;                   // save: data file numbers start here
  std::string comm_device = "cpu";            // load: the Comm's device ("cpu", "cuda")
  std::map<std::string, std::string> options; // free-form, e.g. from --set key=value
};

// The text of an embedded planner ("planners/default_save.lua"); throws if unknown.
std::string EmbeddedPlanner(const std::string& name);

// Where a script named on a command line or in options comes from: a readable file at
// `path`, else the embedded planner it names ("planners/fsdp_to_tp.lua", "fsdp_to_tp.lua" or
// "fsdp_to_tp"). Returns {name for messages, source}; throws if neither exists.
std::pair<std::string, std::string> ResolvePlanner(const std::string& path);

class SavePlanner {
 public:
  // `script_path` empty: the embedded planners/default_save.lua.
  static std::unique_ptr<SavePlanner> Create(const std::string& script_path = "",
                                             const PlannerLimits& limits = {});
  // From a script's text (e.g. a conversion planner's save_global).
  static std::unique_ptr<SavePlanner> FromSource(const std::string& name, const std::string& source,
                                                 const PlannerLimits& limits = {});
  ~SavePlanner();

  // Each rank: keeps, drops or renames items. Returns the items kept. (A script without
  // save_local keeps every item, so a conversion script may define only save_global.)
  proto::SavePlan Local(const PlanContext& ctx, const proto::SavePlan& plan);
  // Coordinator: decides the writer and file of every item. `plans[r]` is rank r's local
  // plan; returns one plan per rank with `file` set, plus planner data for the metadata.
  std::vector<proto::SavePlan> Global(const PlanContext& ctx,
                                      const std::vector<proto::SavePlan>& plans,
                                      std::map<std::string, std::string>* planner_data);
  // The most Lua instructions one call into the script has run (in steps of 1,000), and the
  // most bytes its Lua state has held: how far below its PlannerLimits it stays.
  int64_t peak_instructions() const;
  int64_t peak_bytes() const;
  const std::string& script_name() const { return name_; }
  // The script's text (save-plan caching keys its cache on it).
  const std::string& script_source() const { return source_; }

 private:
  SavePlanner(std::unique_ptr<LuaVm> vm, std::string name, std::string source);
  std::unique_ptr<LuaVm> vm_;
  std::string name_, source_;
};

struct LoadTarget {
  std::string fqn;
  bool is_bytes = false;
  std::string dtype;
  std::vector<int64_t> shape;
  Box box;
};

struct LoadRead {
  int target = 0;   // index into the targets
  std::string key;  // saved key
  int chunk = -1;   // index into the saved key's chunks; -1 for bytes
};

// One tensor target chunk of one rank, as the coordinator's load_broadcast sees it.
struct LoadWant {
  std::string fqn;
  std::string key;  // the saved key load_local reads it from ("" also if it reads nothing)
  std::string dtype;
  std::vector<int64_t> shape;
  Box box;
  int64_t nbytes = 0;
};

// A region of a tensor read from storage by `root` alone and broadcast to every rank, each of
// which has a target chunk of `fqn` with exactly this box.
struct BroadcastGroup {
  std::string fqn;
  Box box;
  int root = 0;
};

class LoadPlanner {
 public:
  static std::unique_ptr<LoadPlanner> Create(const std::string& script_path = "",
                                             const PlannerLimits& limits = {});
  ~LoadPlanner();

  // Chooses the saved sources of every target. Targets with no source go to `missing`.
  std::vector<LoadRead> Local(const PlanContext& ctx, const std::vector<LoadTarget>& targets,
                              const proto::Metadata& md, std::vector<int>* missing);
  // True when the script defines the optional P.load_broadcast.
  bool has_broadcast() const { return has_broadcast_; }
  // Coordinator, several ranks: which replicated regions one rank reads and broadcasts.
  // `wanted[r]` lists rank r's tensor targets. Runs P.load_broadcast(ctx, wanted, md) and
  // validates its groups: every rank has a target chunk of the group's fqn with exactly its
  // box (of one dtype and saved key on all ranks), the root is a rank, no group twice.
  // Throws dcpp::Error naming the script and the key otherwise. Groups keep the script's order.
  std::vector<BroadcastGroup> Broadcast(const PlanContext& ctx,
                                        const std::vector<std::vector<LoadWant>>& wanted,
                                        const proto::Metadata& md);
  // The most Lua instructions one call into the script has run (in steps of 1,000), and the
  // most bytes its Lua state has held: how far below its PlannerLimits it stays.
  int64_t peak_instructions() const;
  int64_t peak_bytes() const;
  const std::string& script_name() const { return name_; }

 private:
  LoadPlanner(std::unique_ptr<LuaVm> vm, std::string name);
  std::unique_ptr<LuaVm> vm_;
  std::string name_;
  bool has_broadcast_ = false;
};

// One key of a conversion's output: read `source` from the checkpoint, write it as `key` with
// `layout` over the target ranks (tensors; bytes entries are copied once).
struct ConvertEntry {
  std::string key;
  std::string source;
  bool is_bytes = false;
  Layout layout;
};

// Thrown by ConvertPlanner::Options (and so by convert()) for a --set key the planner does not
// declare: a mistake on the command line rather than in the data.
class UnknownOptionError : public Error {
 public:
  using Error::Error;
};

// A conversion planner (e.g. planners/fsdp_to_tp.lua): decides the target key and layout of
// every saved key. Contract (README "Write your own planner"):
//   P.options = {name = "default", ...}      the --set keys it accepts, with defaults
//   P.convert(ctx, md) -> entries[, mesh]    entries = {{key, source, layout}, ...} in
//                                            output order; keys left out are dropped
//   P.save_global(ctx, plans) (optional)     placement of the target chunks, as in a save
// `layout` is "Shard(d)", "Replicate()" or a list of those, one per mesh dimension; `mesh`
// (default {world_size}) must multiply to the target world size.
class ConvertPlanner {
 public:
  static std::unique_ptr<ConvertPlanner> Create(const std::string& script_path,
                                                const PlannerLimits& limits = {});
  ~ConvertPlanner();

  // P.options merged with `set`; throws UnknownOptionError naming the key if `set` has one
  // that P.options does not declare.
  std::map<std::string, std::string> Options(const std::map<std::string, std::string>& set);
  // Runs P.convert; validates the answer against `md` (sources exist, keys unique, layouts
  // well-formed for each tensor's rank) and fills `mesh`.
  std::vector<ConvertEntry> Plan(const PlanContext& ctx, const proto::Metadata& md,
                                 std::vector<int64_t>* mesh);
  bool has_save_global() const { return has_save_global_; }
  // The most Lua instructions one call into the script has run (in steps of 1,000), and the
  // most bytes its Lua state has held: how far below its PlannerLimits it stays.
  int64_t peak_instructions() const;
  int64_t peak_bytes() const;
  const std::string& script_name() const { return name_; }
  const std::string& script_source() const { return source_; }

 private:
  ConvertPlanner(std::unique_ptr<LuaVm> vm, std::string name, std::string source);
  std::unique_ptr<LuaVm> vm_;
  std::string name_, source_;
  bool has_save_global_ = false;
};

}  // namespace dcpp
