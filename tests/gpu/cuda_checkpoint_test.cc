// CUDA tensors through the engine: every dtype, resharding into CUDA targets, allocation on
// the GPU, an NCCL group (one GPU: world of one), gloo ranks holding CUDA tensors, and
// async_save of CUDA tensors changed right after Save() returns.
// Also the staging ring: bounded pinned host memory, and ordering against the trainer's stream.
// Skips when no GPU is visible (always in the CPU build).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "core/comm/c10d_comm.h"
#include "core/comm/nccl.h"
#include "core/dcpp.h"
#include "core/engine/async_save.h"
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

// Large CUDA chunks, strided ones among them, through a pool far smaller than the data, with
// two threads each way: values intact and pinned host memory within the pools.
TEST(Cuda, StagedThroughASmallPinnedPoolBothWays) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  const auto on_gpu = at::TensorOptions().device(kGpu);
  const at::Tensor a = at::rand({2048, 4096}, on_gpu);                     // 32 MiB
  const at::Tensor b = at::rand({4096, 1024}, on_gpu.dtype(at::kBFloat16)).t();  // strided
  const at::Tensor c = at::randint(0, 1 << 20, {3, 1000, 777}, on_gpu.dtype(at::kLong));
  StateDict sd;
  sd.AddTensor("a", a);
  sd.AddTensor("b", b);
  sd.AddTensor("c", c);
  SaveOptions so;
  so.thread_count = 2;
  so.staging_bytes = 1 << 20;
  so.staging_buffers = 4;
  const SaveStats saved = save(sd, dir.path(), so);
  const int64_t total = a.nbytes() + b.nbytes() + c.nbytes();
  EXPECT_EQ(saved.staged_bytes, total);
  EXPECT_LE(saved.staging_peak_bytes, 2 << 20);

  at::Tensor b_storage = at::zeros({4096, 1024}, on_gpu.dtype(at::kBFloat16));
  StateDict back;
  back.AddUnallocated("a", at::kFloat, {2048, 4096}, Layout::Replicated(1), 0);
  back.AddTensor("b", b_storage.t());
  back.AddSharded("c", at::zeros_like(c), Layout::Sharded(1, 0), 0);
  LoadOptions lo;
  lo.thread_count = 2;
  lo.staging_bytes = 3 << 20;
  lo.staging_buffers = 3;
  lo.allocate_device = kGpu;
  const LoadStats loaded = load(back, dir.path(), lo);
  EXPECT_EQ(loaded.staged_bytes, total);
  EXPECT_LE(loaded.staging_peak_bytes, 6 << 20);
  EXPECT_EQ(loaded.checksums_verified, 3);
  EXPECT_TRUE(at::equal(back.FindTensor("a")->chunks[0].tensor, a));
  EXPECT_TRUE(at::equal(b_storage.t(), b));
  EXPECT_TRUE(at::equal(back.FindTensor("c")->chunks[0].tensor, c));
}

// The trainer works on a stream of its own: a save right after queued kernels must see their
// results, and a load must land after kernels queued on its targets (the copy streams wait).
TEST(Cuda, CopiesAreOrderedAfterTheCurrentStream) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  const auto on_gpu = at::TensorOptions().device(kGpu);
  at::Tensor x = at::zeros({64 << 20}, on_gpu);  // 256 MiB: the kernels take a while
  at::Tensor target = at::zeros({64 << 20}, on_gpu);
  {
    c10::StreamGuard trainer(impl.getStreamFromGlobalPool(kGpu));
    for (int i = 0; i < 20; ++i) x.add_(1);
    StateDict sd;
    sd.AddTensor("x", x);
    SaveOptions so;
    so.staging_bytes = 8 << 20;
    save(sd, dir.path(), so);
    for (int i = 0; i < 20; ++i) target.add_(3);  // queued; the load must come after
    StateDict back;
    back.AddTensor("x", target);
    LoadOptions lo;
    lo.staging_bytes = 8 << 20;
    load(back, dir.path(), lo);
    EXPECT_EQ(target.min().item<float>(), 20.0f);
    EXPECT_EQ(target.max().item<float>(), 20.0f);

    // async_save: the snapshot holds the queued kernels' results and not what comes after.
    for (int i = 0; i < 20; ++i) x.add_(1);
    AsyncSaver saver;
    StateDict sd2;
    sd2.AddTensor("x", x);
    PendingSave p = saver.Save(sd2, dir / "async");
    x.fill_(-1);
    p.wait();
    load(back, dir / "async", lo);
    EXPECT_EQ(target.min().item<float>(), 40.0f);
    EXPECT_EQ(target.max().item<float>(), 40.0f);
  }
}

// GPUDirect Storage where cuFile works on this machine, else the staging ring with a note
// saying why: the values arrive either way.
TEST(Cuda, GpuDirectReadsOrFallsBackWithAReason) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  const at::Tensor w = at::rand({1000, 1000}, at::TensorOptions().device(kGpu));
  StateDict sd;
  sd.AddTensor("w", w);
  save(sd, dir.path());
  StateDict back;
  back.AddTensor("w", at::zeros_like(w));
  LoadOptions lo;
  lo.gpudirect = true;
  lo.verify_checksums = false;
  const LoadStats st = load(back, dir.path(), lo);
  EXPECT_TRUE(at::equal(back.FindTensor("w")->chunks[0].tensor, w));
  if (st.gpudirect_bytes > 0) {
    EXPECT_EQ(st.gpudirect_bytes, w.nbytes());
    EXPECT_EQ(st.staged_bytes, 0);
  } else {
    EXPECT_FALSE(st.gpudirect_note.empty());
    EXPECT_EQ(st.staged_bytes, w.nbytes());
  }
  std::printf("gpudirect: %lld bytes%s%s\n", static_cast<long long>(st.gpudirect_bytes),
              st.gpudirect_note.empty() ? "" : "; fell back: ", st.gpudirect_note.c_str());
}

}  // namespace
}  // namespace dcpp
