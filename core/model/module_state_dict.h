// State dicts from LibTorch modules: a torch::nn::Module's named parameters and buffers as
// tensor entries, each placed by a layout (e.g. FSDP: every parameter Shard(0) over the
// data-parallel ranks; TP: net1 column-wise, net2 row-wise). Kept apart from core/dcpp.h so
// that only code that uses modules pays for LibTorch's C++ frontend headers.
#pragma once

#include <functional>
#include <string>

#include "core/model/state_dict.h"

namespace torch::nn {
class Module;
}

namespace dcpp {

// Gives the layout of a parameter or buffer by its FQN.
using LayoutFn = std::function<Layout(const std::string& fqn)>;

// Adds every parameter and buffer of `module` under `prefix` ("model." -> "model.net1.weight")
// as the chunk that `rank` holds under `layout_of(fqn)` (nullptr: the whole tensor). The
// entries are views of the module's tensors: load() writes into the module in place.
void AddModule(StateDict& sd, const torch::nn::Module& module, const std::string& prefix = "",
               const LayoutFn& layout_of = nullptr, int64_t rank = 0);

// The same for every rank of the layouts at once (one process holding all ranks' chunks, as
// a conversion tool or a test does).
void AddModuleAllRanks(StateDict& sd, const torch::nn::Module& module, const std::string& prefix,
                       const LayoutFn& layout_of);

}  // namespace dcpp
