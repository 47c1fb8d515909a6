#include "tests/crash/generation.h"

#include <cstring>

#include "core/base/error.h"
#include "core/dcpp.h"
#include "core/model/layout.h"
#include "core/storage/dcp/dcp.h"
#include "core/tools/verify.h"

namespace dcpp::crash {
namespace {

// Element i of key number k in generation gen: an integer in [0, 65521), a different one in
// each generation (the offsets differ by 17188 mod 65521), exact in float32 and distinct
// after bfloat16 rounding (spacing <= 256 there).
at::Tensor Values(int gen, int k, const std::vector<int64_t>& shape, at::ScalarType dtype) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  at::Tensor v = (at::arange(numel, at::kLong) * 31 + (gen * 1000003 + k * 7919)).remainder(65521);
  return v.to(dtype).reshape(shape);
}

bool BitEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

}  // namespace

Generation MakeGeneration(int gen, int64_t mib) {
  // Four float32 matrices of 1024 columns hold ~15/16 of the bytes.
  const int64_t rows = std::max<int64_t>(6, (mib << 20) / (4 * 4 * 1024) / 6 * 6);
  Generation g;
  int k = 0;
  for (int i = 0; i < 4; ++i) {
    g.tensors.push_back({"layers." + std::to_string(i) + ".weight", Values(gen, k++, {rows, 1024}, at::kFloat)});
  }
  g.tensors.push_back({"norm.bias", Values(gen, k++, {rows}, at::kBFloat16)});
  g.tensors.push_back({"embed", Values(gen, k++, {rows, 64}, at::kLong)});
  g.tensors.push_back({"step", at::scalar_tensor(100 + gen, at::kLong)});
  g.blob_key = "optim.param_groups";
  g.blob = "generation " + std::to_string(gen) + std::string(1000, static_cast<char>('a' + gen));
  return g;
}

void AddGeneration(const Generation& g, int world, int rank, StateDict& sd) {
  for (const GenTensor& t : g.tensors) {
    sd.AddSharded(t.key, t.value, t.value.dim() == 0 ? Layout::Replicated(world) : Layout::Sharded(world, 0), rank);
  }
  sd.AddBytes(g.blob_key, g.blob);
}

FolderState Inspect(const std::string& dir, Format format, const std::vector<Generation>& gens) {
  FolderState st;
  try {
    VerifyReport r = format == Format::kNative ? Verify(dir) : Verify(*OpenReader(dir));
    if (!r.ok()) {
      st.problem = "verify: " + (r.problems.empty() ? std::string("?") : r.problems[0].message);
      return st;
    }
    if (format == Format::kDcp) {
      const DcpArchiveCheck crc = CheckDcpArchives(dir);
      if (!crc.problems.empty()) {
        st.problem = "verify: " + crc.problems[0];
        return st;
      }
    }
    const Generation& shape = gens.at(0);
    if (r.tensors != static_cast<int64_t>(shape.tensors.size()) || r.bytes_entries != 1) {
      st.problem = StrCat("verify: ", dir, " holds ", r.tensors, " tensors and ", r.bytes_entries,
                          " bytes entries, expected ", shape.tensors.size(), " and 1");
      return st;
    }
    st.valid = true;
    StateDict sd;
    for (const GenTensor& t : shape.tensors) {
      sd.AddUnallocated(t.key, t.value.scalar_type(), t.value.sizes().vec(), Layout::Replicated(1), 0);
    }
    sd.AddBytes(shape.blob_key, "");
    load(sd, *OpenReader(dir));
    // DCP stores a C++ blob as a torch.save'd Python bytes object, and loads it back as such.
    const DcpWriter encoder(dir);
    for (size_t g = 0; g < gens.size(); ++g) {
      bool all = true;
      std::string first_diff;
      for (const GenTensor& t : gens[g].tensors) {
        if (!BitEqual(sd.FindTensor(t.key)->chunks.at(0).tensor, t.value)) {
          all = false;
          first_diff = t.key;
          break;
        }
      }
      const std::string blob = format == Format::kDcp ? encoder.EncodeBytes(gens[g].blob) : gens[g].blob;
      if (all && sd.FindBytes(gens[g].blob_key)->data != blob) {
        all = false;
        first_diff = gens[g].blob_key;
      }
      if (all) {
        st.generation = static_cast<int>(g);
        return st;
      }
      st.problem += StrCat(st.problem.empty() ? "" : "; ", "key '", first_diff, "' in ", dir,
                           " differs from generation ", g);
    }
  } catch (const std::exception& e) {
    st.problem += StrCat(st.problem.empty() ? "" : "; ", ErrorMessage(e));
  }
  return st;
}

}  // namespace dcpp::crash
