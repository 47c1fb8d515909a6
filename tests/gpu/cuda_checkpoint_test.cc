// CUDA tensors through the engine: every dtype, resharding into CUDA targets, allocation on
// the GPU, an NCCL group (one GPU: world of one), gloo ranks holding CUDA tensors, and
// async_save of CUDA tensors changed right after Save() returns.
// Skips when no GPU is visible (always in the CPU build).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "core/comm/c10d_comm.h"
#include "core/async_save.h"
#include "core/comm/nccl.h"
#include "core/dcpp.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible"

const at::Device kGpu(at::kCUDA, 0);

TEST(Cuda, EveryDtypeRoundTrips) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  const at::ScalarType dtypes[] = {at::kBool, at::kByte, at::kChar, at::kShort, at::kInt, at::kLong,
                                   at::kHalf, at::kBFloat16, at::kFloat, at::kDouble,
                                   at::kComplexFloat, at::kFloat8_e4m3fn, at::kFloat8_e5m2};
  StateDict sd, back;
  std::vector<at::Tensor> values;
  for (at::ScalarType dt : dtypes) {
    const at::Tensor bits = at::randint(0, 2, {64, 33}, at::kByte).view(at::kBool).to(at::kByte);
    at::Tensor v = (dt == at::kBool ? bits.to(at::kBool) : at::randint(0, 120, {64, 33}).to(dt)).to(kGpu);
    values.push_back(v);
    sd.AddTensor(c10::toString(dt), v);
    back.AddTensor(c10::toString(dt), at::zeros_like(v));
  }
  save(sd, dir.path());
  load(back, dir.path());
  for (size_t i = 0; i < values.size(); ++i) {
    const at::Tensor got = back.tensors()[i].chunks[0].tensor;
    EXPECT_TRUE(got.is_cuda());
    EXPECT_TRUE(at::equal(got.cpu().view(at::kByte), values[i].cpu().view(at::kByte))) << back.tensors()[i].fqn;
  }
}

TEST(Cuda, ReshardIntoCudaTargetsAndAllocateOnTheGpu) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  const at::Tensor full = at::rand({96, 40}, at::TensorOptions().device(kGpu));
  StateDict rows;
  for (int r = 0; r < 3; ++r) rows.AddSharded("w", full, Layout::Sharded(3, 0), r);
  save(rows, dir.path());
  StateDict cols;
  for (int r = 0; r < 2; ++r) cols.AddUnallocated("w", at::kFloat, {96, 40}, Layout::Sharded(2, 1), r);
  LoadOptions lo;
  lo.allocate_device = kGpu;
  load(cols, dir.path(), lo);
  for (const LocalChunk& c : cols.FindTensor("w")->chunks) {
    ASSERT_TRUE(c.tensor.is_cuda());
    EXPECT_TRUE(at::equal(c.tensor, full.narrow(1, c.box.offsets[1], c.box.sizes[1])));
  }
}

TEST(Cuda, NcclGroupOfOne) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  auto store = c10::make_intrusive<c10d::HashStore>();
  C10dComm comm(MakeNcclBackend(store, 0, 1, 0, std::chrono::seconds(60)), kGpu);
  const at::Tensor w = at::rand({8, 8}, at::TensorOptions().device(kGpu));
  StateDict sd;
  sd.AddTensor("w", w);
  sd.AddBytes("b", "nccl");
  SaveOptions so;
  so.comm = &comm;
  save(sd, dir.path(), so);
  StateDict back;
  back.AddTensor("w", at::zeros_like(w));
  back.AddBytes("b", "");
  LoadOptions lo;
  lo.comm = &comm;
  load(back, dir.path(), lo);
  EXPECT_TRUE(at::equal(back.FindTensor("w")->chunks[0].tensor, w));
  EXPECT_EQ(back.FindBytes("b")->data, "nccl");
}

TEST(Cuda, GlooRanksHoldingCudaTensors) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  const at::Tensor full = at::rand({10, 6}, at::TensorOptions().device(kGpu));
  const auto errors = testing::RunRanks(2, [&](int rank, Comm& comm) {
    StateDict sd;
    sd.AddSharded("w", full, Layout::Sharded(2, 0), rank);
    SaveOptions so;
    so.comm = &comm;
    save(sd, dir.path(), so);
    StateDict back;
    back.AddUnallocated("w", at::kFloat, {10, 6}, Layout::Sharded(2, 1), rank);
    LoadOptions lo;
    lo.comm = &comm;
    lo.allocate_device = kGpu;
    load(back, dir.path(), lo);
    const LocalChunk& c = back.FindTensor("w")->chunks[0];
    DCPP_CHECK(c.tensor.is_cuda() && at::equal(c.tensor, full.narrow(1, c.box.offsets[1], c.box.sizes[1])),
               "rank ", rank, " differs");
  });
  EXPECT_EQ(testing::Joined(errors), "");
}

TEST(Cuda, AsyncSaveSnapshotsBeforeTheTensorsChange) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  at::Tensor w = at::rand({1024, 256}, at::TensorOptions().device(kGpu));
  const at::Tensor before = w.cpu();
  StateDict sd;
  sd.AddSharded("w", w, Layout::Sharded(2, 1), 0);
  sd.AddSharded("w", w, Layout::Sharded(2, 1), 1);
  AsyncSaver saver;
  PendingSave p = saver.Save(sd, dir.path());
  w.mul_(-1);  // on the current stream, after the snapshot's copies
  p.wait();
  StateDict back;
  back.AddTensor("w", at::zeros({1024, 256}));
  load(back, dir.path());
  EXPECT_TRUE(at::equal(back.tensors()[0].chunks[0].tensor, before));
}

}  // namespace
}  // namespace dcpp
