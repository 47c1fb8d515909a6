// make_checkpoint: a test helper that writes a small native checkpoint with chosen key names,
// and checks a converted one against the same values.
//
//   make_checkpoint OUT [--ranks 2] [--seed 1] [--dtype float32] KEY:SHAPE ... [--bytes K=V ...]
//   make_checkpoint --check DIR [--seed 1] [--dtype float32] KEY[=SOURCE]:SHAPE ... [--bytes K=V ...]
//
// SHAPE is "16x10", "4", or "scalar" (0-d). Each tensor holds seeded normal values that depend
// only on --seed and the key it was made under, so --check can regenerate what a converted key
// must hold: `tok_embeddings.weight=model.embed_tokens.weight:32x8` loads the first (whole, in
// one process, whatever its saved layout) and compares it with the values made for the second.
// Made checkpoints are FSDP-sharded: every tensor Shard(0) over --ranks (0-d ones replicated),
// saved with every rank's chunks in one process; bytes entries hold their given text.
// Exit codes: 0 written / every value equal, 1 a difference or error (named), 2 usage.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/dcpp.h"
#include "core/model/dtype.h"
#include "scripts/cli.h"

namespace {

struct Spec {
  std::string key, source;
  std::vector<int64_t> shape;
};

// "key[=source]:16x10" (the last ':' separates the shape, so keys may hold ':').
Spec ParseSpec(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw dcpp::cli::UsageError("'" + text + "': expected KEY:SHAPE, e.g. net1.weight:16x10");
  }
  Spec s;
  const std::string name = text.substr(0, colon), shape = text.substr(colon + 1);
  const size_t eq = name.find('=');
  s.key = name.substr(0, eq);
  s.source = eq == std::string::npos ? s.key : name.substr(eq + 1);
  if (shape == "scalar") return s;
  size_t pos = 0;
  while (pos <= shape.size()) {
    const size_t x = std::min(shape.find('x', pos), shape.size());
    const std::string dim = shape.substr(pos, x - pos);
    if (dim.empty() || dim.find_first_not_of("0123456789") != std::string::npos) {
      throw dcpp::cli::UsageError("'" + text + "': shape '" + shape + "' is not like 16x10, 4 or scalar");
    }
    s.shape.push_back(std::stoll(dim));
    pos = x + 1;
  }
  return s;
}

// Seeded normal values for `key`: the same for the same (seed, key, shape, dtype).
at::Tensor Values(const std::string& key, const std::vector<int64_t>& shape, uint64_t seed,
                  c10::ScalarType dtype) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the key, mixed with the seed
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  at::Generator gen = at::detail::createCPUGenerator(h ^ (seed * 0x9e3779b97f4a7c15ull));
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);
}

std::pair<std::string, std::string> ParseBytesArg(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw dcpp::cli::UsageError("--bytes " + text + ": expected NAME=VALUE");
  return {text.substr(0, eq), text.substr(eq + 1)};
}

int Make(const std::string& out, const std::vector<Spec>& specs,
         const std::vector<std::pair<std::string, std::string>>& blobs, int ranks, uint64_t seed,
         c10::ScalarType dtype) {
  std::vector<at::Tensor> keep;  // the state dict holds views; the tensors must outlive save()
  dcpp::StateDict sd;
  for (const Spec& s : specs) {
    if (s.key != s.source) throw dcpp::cli::UsageError(s.key + "=" + s.source + ": KEY=SOURCE goes with --check");
    keep.push_back(Values(s.key, s.shape, seed, dtype));
    const dcpp::Layout layout =
        s.shape.empty() ? dcpp::Layout::Replicated(ranks) : dcpp::Layout::Sharded(ranks, 0);
    for (int r = 0; r < ranks; ++r) sd.AddSharded(s.key, keep.back(), layout, r);
  }
  for (const auto& [k, v] : blobs) sd.AddBytes(k, v);
  dcpp::save(sd, out);
  std::printf("wrote %zu tensors and %zu bytes entries over %d ranks to %s\n", specs.size(),
              blobs.size(), ranks, out.c_str());
  return dcpp::cli::kOk;
}

int Check(const std::string& dir, const std::vector<Spec>& specs,
          const std::vector<std::pair<std::string, std::string>>& blobs, uint64_t seed,
          c10::ScalarType dtype) {
  dcpp::StateDict sd;
  for (const Spec& s : specs) sd.AddUnallocated(s.key, dtype, s.shape, dcpp::Layout::Replicated(1), 0);
  for (const auto& [k, v] : blobs) sd.AddBytes(k, "");
  dcpp::load(sd, dir);
  int bad = 0;
  for (const Spec& s : specs) {
    const at::Tensor got = sd.FindTensor(s.key)->chunks.at(0).tensor;
    if (!at::equal(got, Values(s.source, s.shape, seed, dtype))) {
      std::printf("differs: %s (expected the values made for %s)\n", s.key.c_str(), s.source.c_str());
      ++bad;
    }
  }
  for (const auto& [k, v] : blobs) {
    if (sd.FindBytes(k)->data != v) {
      std::printf("differs: bytes %s = '%s' (expected '%s')\n", k.c_str(), sd.FindBytes(k)->data.c_str(), v.c_str());
      ++bad;
    }
  }
  if (bad) {
    std::printf("FAILED: %d of %zu entries differ\n", bad, specs.size() + blobs.size());
    return dcpp::cli::kFailed;
  }
  std::printf("equal: %zu tensors, %zu bytes entries\n", specs.size(), blobs.size());
  return dcpp::cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a small FSDP-sharded test checkpoint, or check a converted one.", "make_checkpoint"};
  std::string dir, dtype_name = "float32";
  std::vector<std::string> spec_args, bytes_args;
  bool check = false;
  int ranks = 2;
  uint64_t seed = 1;
  app.add_option("DIR", dir, "checkpoint folder to write (or, with --check, to read)")->required();
  app.add_option("SPECS", spec_args, "KEY:SHAPE (with --check KEY[=SOURCE]:SHAPE), SHAPE like 16x10, 4, scalar");
  app.add_option("--bytes", bytes_args, "bytes entry NAME=VALUE (repeatable)")->allow_extra_args(false);
  app.add_option("--ranks", ranks, "ranks the tensors are sharded over")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "seed of the values")->capture_default_str();
  app.add_option("--dtype", dtype_name, "dtype of every tensor")->capture_default_str();
  app.add_flag("--check", check, "compare DIR's keys with the values they were made from");
  return dcpp::cli::Run(app, argc, argv, [&] {
    std::vector<Spec> specs;
    for (const std::string& a : spec_args) specs.push_back(ParseSpec(a));
    std::vector<std::pair<std::string, std::string>> blobs;
    for (const std::string& b : bytes_args) blobs.push_back(ParseBytesArg(b));
    const c10::ScalarType dtype = dcpp::DtypeFromName(dtype_name);
    dir = dcpp::cli::UserPath(dir);
    return check ? Check(dir, specs, blobs, seed, dtype) : Make(dir, specs, blobs, ranks, seed, dtype);
  });
}
