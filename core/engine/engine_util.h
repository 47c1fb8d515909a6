// Internal helpers shared by save.cc and load.cc: running a step on every rank with errors
// raised everywhere, tensor views of boxes (threads: core/base/parallel.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/comm/comm.h"
#include "core/model/box.h"

namespace dcpp::internal {

// Runs `fn` on this rank; if it fails on any rank, every rank throws dcpp::Error with the
// lowest failing rank's message ("rank R: ..." when there are several ranks).
template <typename F>
void OnEveryRank(Comm& comm, const char* step, F&& fn) {
  std::string err;
  try {
    fn();
  } catch (const std::exception& e) {
    err = comm.size() > 1 ? StrCat("rank ", comm.rank(), ": ", ErrorMessage(e)) : ErrorMessage(e);
  }
  try {
    err = comm.AllReduceError(err);
  } catch (const std::exception& e) {  // a rank died or the group broke
    throw Error(StrCat(step, " failed: ", err.empty() ? "" : err + "; and then: ", ErrorMessage(e)));
  }
  if (!err.empty()) throw Error(StrCat(step, " failed: ", err));
}

// The part of `t` (which holds box `origin`) that covers `region`.
inline at::Tensor ViewOf(const at::Tensor& t, const Box& origin, const Box& region) {
  if (region == origin) return t;  // the whole of it (no narrow() per dimension)
  at::Tensor v = t;
  for (size_t d = 0; d < region.sizes.size(); ++d) {
    v = v.narrow(static_cast<int64_t>(d), region.offsets[d] - origin.offsets[d], region.sizes[d]);
  }
  return v;
}

inline uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace dcpp::internal
