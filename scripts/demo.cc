// The FSDP -> TP demo on the seeds' MLP (net1 = Linear(10, 16), net2 = Linear(16, 10)), in one
// process: saves the model FSDP-sharded over 2 ranks (every parameter Shard(0)), loads it into
// a fresh model laid out for tensor parallelism over 2 ranks (net1 column-wise, net2 row-wise,
// net2.bias replicated), checks every value, and prints what moved where.
//
//   bazel run //scripts:demo [-- --out DIR]
#include <torch/nn/modules/linear.h>
#include <torch/nn/module.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "core/dcpp.h"
#include "core/module_state_dict.h"

namespace {

struct MLP : torch::nn::Module {
  MLP() {
    net1 = register_module("net1", torch::nn::Linear(10, 16));
    net2 = register_module("net2", torch::nn::Linear(16, 10));
  }
  torch::nn::Linear net1{nullptr}, net2{nullptr};
};

dcpp::Layout TpLayout(const std::string& fqn) {
  if (fqn == "net2.weight") return dcpp::Layout::Sharded(2, 1);  // row-wise
  if (fqn == "net2.bias") return dcpp::Layout::Replicated(2);
  return dcpp::Layout::Sharded(2, 0);  // net1 column-wise
}

}  // namespace

int main(int argc, char** argv) {
  std::string out;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--out" && i + 1 < argc) out = argv[++i];
  }
  const bool keep = !out.empty();
  if (!keep) out = std::filesystem::temp_directory_path() / ("dcpp_demo_" + std::to_string(::getpid()));
  try {
    torch::manual_seed(0);
    MLP fsdp, tp;
    dcpp::StateDict saved;
    dcpp::AddModuleAllRanks(saved, fsdp, "", [](const std::string&) { return dcpp::Layout::Sharded(2, 0); });
    dcpp::save(saved, out + "/fsdp");

    bool differ = false;
    for (const auto& p : fsdp.named_parameters()) {
      differ |= !torch::equal(p.value(), tp.named_parameters()[p.key()]);
    }
    dcpp::LoadStats total;
    for (int rank = 0; rank < 2; ++rank) {
      dcpp::StateDict target;
      dcpp::AddModule(target, tp, "", TpLayout, rank);
      const dcpp::LoadStats s = dcpp::load(target, out + "/fsdp");
      total.bytes_read += s.bytes_read;
      total.checksums_verified += s.checksums_verified;
    }
    std::printf("%-12s %-10s %-14s %-8s %s\n", "key", "source", "target", "shape", "bytes");
    bool equal = true;
    for (const auto& p : fsdp.named_parameters()) {
      const at::Tensor& v = p.value();
      equal &= torch::equal(v, tp.named_parameters()[p.key()]);
      const std::string shape = v.dim() == 2 ? std::to_string(v.size(0)) + "x" + std::to_string(v.size(1))
                                             : std::to_string(v.size(0));
      std::printf("%-12s %-10s %-14s %-8s %lld\n", p.key().c_str(), "Shard(0)",
                  TpLayout(p.key()).placements[0].ToString().c_str(), shape.c_str(),
                  static_cast<long long>(v.numel() * v.element_size()));
    }
    if (keep) {
      dcpp::StateDict tp_sd;
      dcpp::AddModuleAllRanks(tp_sd, tp, "", TpLayout);
      dcpp::save(tp_sd, out + "/tp");
      std::printf("left %s/fsdp and %s/tp\n", out.c_str(), out.c_str());
    } else {
      std::filesystem::remove_all(out);
    }
    if (!differ || !equal) {
      std::printf("FAILED: values %s\n", !differ ? "were equal before loading" : "differ after loading");
      return 1;
    }
    std::printf("verified: FSDP(2) -> TP(2), %lld bytes read, %lld checksums, every value equal\n",
                static_cast<long long>(total.bytes_read),
                static_cast<long long>(total.checksums_verified));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo: %s\n", e.what());
    return 1;
  }
}
