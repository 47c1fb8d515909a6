// What pickle's .cc files share about values (not part of pickle.h's API): a bare value of
// one kind, and the walks over a whole value graph that Decode uses.
#pragma once

#include <vector>

#include "core/storage/dcp/pickle.h"

namespace dcpp {
namespace pickle {

// A new value of kind `k`, every other field at its default.
ValuePtr Make(Value::Kind k);

// True when a container reachable from `roots` holds itself, directly or not (APPEND, SETITEM
// or BUILD with a memoized container: `l = []; l.append(l)`). Iterative, so deep nesting is
// fine.
bool HasCycle(const std::vector<ValuePtr>& roots);

// Drops every link between the values reachable from `roots`, so that reference cycles do not
// keep them alive once the decoder lets go.
void Unlink(const std::vector<ValuePtr>& roots);

}  // namespace pickle
}  // namespace dcpp
