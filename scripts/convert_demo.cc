#include "scripts/convert_demo.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/model/module_state_dict.h"
#include "core/tools/convert.h"
#include "scripts/cli.h"

namespace dcpp::cli {
namespace {

// The seeds' model (test_fsdp_tp_checkpoint_conversion): net1 = Linear(10, 16),
// net2 = Linear(16, 10).
struct MLP : torch::nn::Module {
  MLP() {
    net1 = register_module("net1", torch::nn::Linear(10, 16));
    net2 = register_module("net2", torch::nn::Linear(16, 10));
  }
  torch::nn::Linear net1{nullptr}, net2{nullptr};
};

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s.empty() ? "scalar" : s;
}

}  // namespace

int RunDemo(const std::string& out_arg) {
  const bool keep = !out_arg.empty();
  const std::string out = keep ? out_arg
                               : (std::filesystem::temp_directory_path() /
                                  ("dcpp_demo_" + std::to_string(::getpid()))).string();
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
  } cleanup{keep ? "" : out};

  // 1. Save the model as 2 FSDP ranks would: every parameter Shard(0).
  torch::manual_seed(0);
  MLP model;
  StateDict fsdp;
  AddModuleAllRanks(fsdp, model, "", [](const std::string&) { return Layout::Sharded(2, 0); });
  save(fsdp, out + "/fsdp");

  // 2. Convert to TP over 2 ranks with the planner's rules (net1 column-, net2 row-wise).
  ConvertOptions opt;
  opt.planner = "planners/fsdp_to_tp.lua";
  opt.world_size = 2;
  opt.overwrite = keep;
  const ConvertStats st = convert(out + "/fsdp", out + "/tp", opt);

  // 3. Load every chunk of the TP checkpoint on its own and compare it with the model.
  const proto::Metadata md = ParseMetadata(FileSystemReader(out + "/tp").ReadMetadata(), out + "/tp");
  const auto params = model.named_parameters();
  int64_t checked = 0, bytes = 0;
  bool equal = true;
  for (const auto& t : md.tensors()) {
    const at::Tensor& full = params[t.fqn()];
    for (const auto& c : t.chunks()) {
      TensorEntry e{t.fqn(), full.scalar_type(), full.sizes().vec(), {}};
      e.chunks.push_back({Box{{c.offsets().begin(), c.offsets().end()}, {c.sizes().begin(), c.sizes().end()}}, {}});
      StateDict sd;
      sd.Add(std::move(e));
      load(sd, out + "/tp");
      const LocalChunk& got = sd.FindTensor(t.fqn())->chunks[0];
      at::Tensor want = full.detach();
      for (size_t d = 0; d < got.box.sizes.size(); ++d) {
        want = want.narrow(static_cast<int64_t>(d), got.box.offsets[d], got.box.sizes[d]);
      }
      equal &= at::equal(got.tensor, want);
      ++checked;
      bytes += got.tensor.numel() * static_cast<int64_t>(got.tensor.element_size());
    }
  }

  std::printf("%-12s %-14s %-16s %-7s %s\n", "key", "source (FSDP)", "target (TP)", "shape", "bytes");
  for (const ConvertedKey& k : st.keys) {
    std::printf("%-12s %-14s %-16s %-7s %lld\n", k.key.c_str(), k.source_layout.c_str(),
                k.target_layout.c_str(), ShapeText(k.shape).c_str(), static_cast<long long>(k.bytes));
  }
  if (keep) std::printf("left %s/fsdp and %s/tp\n", out.c_str(), out.c_str());
  if (!equal || checked == 0) {
    std::printf("FAILED: the TP checkpoint does not hold the model's values\n");
    return kFailed;
  }
  std::printf("verified: FSDP(2) -> TP(2) with %s: all %lld chunks (%lld bytes) equal the model, "
              "%lld source checksums checked\n",
              st.keys.empty() ? "?" : opt.planner.c_str(), static_cast<long long>(checked),
              static_cast<long long>(bytes), static_cast<long long>(st.chunks_verified));
  return kOk;
}

}  // namespace dcpp::cli
