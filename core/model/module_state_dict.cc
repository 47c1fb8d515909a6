#include "core/model/module_state_dict.h"

#include <torch/nn/module.h>

namespace dcpp {
namespace {

template <typename F>
void ForEachTensor(const torch::nn::Module& module, const std::string& prefix, F&& f) {
  for (const auto& p : module.named_parameters(/*recurse=*/true)) f(prefix + p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) f(prefix + b.key(), b.value());
}

}  // namespace

void AddModule(StateDict& sd, const torch::nn::Module& module, const std::string& prefix,
               const LayoutFn& layout_of, int64_t rank) {
  ForEachTensor(module, prefix, [&](const std::string& fqn, const at::Tensor& t) {
    const at::Tensor data = t.detach();
    if (!layout_of) {
      sd.AddTensor(fqn, data);
    } else {
      sd.AddSharded(fqn, data, layout_of(fqn), rank);
    }
  });
}

void AddModuleAllRanks(StateDict& sd, const torch::nn::Module& module, const std::string& prefix,
                       const LayoutFn& layout_of) {
  ForEachTensor(module, prefix, [&](const std::string& fqn, const at::Tensor& t) {
    const Layout layout = layout_of(fqn);
    for (int64_t r = 0; r < layout.world_size(); ++r) sd.AddSharded(fqn, t.detach(), layout, r);
  });
}

}  // namespace dcpp
