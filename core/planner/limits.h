// PlannerLimits: how much a Lua planner script may use before the engine stops it.
//
// Planner scripts are user code; an endless loop, an allocation without end or a runaway
// recursion must end in a dcpp::Error naming the script, not hang or crash the process.
// SaveOptions, LoadOptions and ConvertOptions carry these fields (planner_instruction_limit,
// planner_memory_limit); the defaults are far above what the embedded planners use on large
// plans (see the figures in bench/README.md, "planning").
#pragma once

#include <cstdint>

namespace dcpp {

// Default instruction limit per call into a planner: 10^10 Lua VM instructions. On
// bench/planning (100,000 items over 64 to 1,024 ranks) the default planners' busiest call
// runs 2.2 * 10^7 (save_global), so this leaves room for plans ~450x that size; a script
// stuck in a loop is stopped after ~30 s of CPU (10^9 instructions took 2.8 s here).
inline constexpr int64_t kDefaultPlannerInstructionLimit = 10'000'000'000;
// Default memory ceiling of a planner's Lua state: 8 GiB. On bench/planning the default
// planners' states peak at 103 MiB (the plans the engine passes in included), ~80x below.
inline constexpr int64_t kDefaultPlannerMemoryLimit = int64_t{8} << 30;

struct PlannerLimits {
  // Lua VM instructions that one call into the script may run: its top level when it is
  // loaded, and each planner function (save_local, save_global, load_local, ...) separately.
  // Counted in steps of 1,000 instructions. 0 = unlimited. Default: 10^10.
  int64_t instructions = kDefaultPlannerInstructionLimit;
  // Bytes the script's Lua state may hold at once: the tables the engine passes in, what the
  // script builds, and garbage not yet collected. 0 = unlimited. Default: 8 GiB.
  int64_t memory_bytes = kDefaultPlannerMemoryLimit;
};

}  // namespace dcpp
