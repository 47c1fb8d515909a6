// World-size changes, dedup and balance, and failures across ranks (gloo, one thread a rank).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/testing/temp_dir.h"
#include "tests/multirank/ranks.h"

namespace dcpp {
namespace {

using testing::Joined;
using testing::RunRanks;
using testing::TempDir;

proto::Metadata ReadMd(const TempDir& dir) {
  std::ifstream in(dir / ".metadata", std::ios::binary);
  return ParseMetadata(std::string(std::istreambuf_iterator<char>(in), {}), dir.path());
}

Layout RandomLayout(int64_t world, int ndim, std::mt19937& rng) {
  if (ndim == 0 || rng() % 4 == 0) return Layout::Replicated(world);
  if (world == 4 && rng() % 3 == 0) {  // a 2-D mesh now and then
    return Layout{{2, 2}, {Placement::Shard(static_cast<int>(rng() % ndim)),
                           Placement::Shard(static_cast<int>(rng() % ndim))}};
  }
  return Layout::Sharded(world, static_cast<int>(rng() % ndim));
}

at::Tensor Slice(const at::Tensor& full, const Box& box) {
  at::Tensor v = full;
  for (size_t d = 0; d < box.sizes.size(); ++d) v = v.narrow(d, box.offsets[d], box.sizes[d]);
  return v;
}

// Save with N ranks, load with M, for all N, M in {1, 2, 3, 4}, random layouts, bit-exact.
TEST(WorldSize, SaveWithNLoadWithM) {
  std::mt19937 rng(4242);
  for (int n = 1; n <= 4; ++n) {
    for (int m = 1; m <= 4; ++m) {
      SCOPED_TRACE("save " + std::to_string(n) + " ranks, load " + std::to_string(m));
      TempDir dir;
      std::vector<at::Tensor> full;
      std::vector<Layout> src, dst;
      const at::ScalarType dtypes[] = {at::kFloat, at::kBFloat16, at::kLong, at::kBool};
      for (int i = 0; i < 5; ++i) {
        const int ndim = static_cast<int>(rng() % 3);
        std::vector<int64_t> shape;
        for (int d = 0; d < ndim; ++d) shape.push_back(1 + static_cast<int64_t>(rng() % 11));
        at::manual_seed(rng());
        full.push_back((at::rand(shape) * 100).to(dtypes[i % 4]));
        src.push_back(RandomLayout(n, ndim, rng));
        dst.push_back(RandomLayout(m, ndim, rng));
      }
      auto errors = RunRanks(n, [&](int rank, Comm& comm) {
        StateDict sd;
        for (size_t i = 0; i < full.size(); ++i) sd.AddSharded("t" + std::to_string(i), full[i], src[i], rank);
        sd.AddBytes("meta", "blob");
        SaveOptions so;
        so.comm = &comm;
        so.thread_count = 1 + rank % 2;
        save(sd, dir.path(), so);
      });
      ASSERT_EQ(Joined(errors), "");
      errors = RunRanks(m, [&](int rank, Comm& comm) {
        StateDict sd;
        for (size_t i = 0; i < full.size(); ++i) {
          sd.AddUnallocated("t" + std::to_string(i), full[i].scalar_type(), full[i].sizes().vec(), dst[i], rank);
        }
        sd.AddBytes("meta", "");
        LoadOptions lo;
        lo.comm = &comm;
        lo.thread_count = 2;
        load(sd, dir.path(), lo);
        for (size_t i = 0; i < full.size(); ++i) {
          const LocalChunk& c = sd.FindTensor("t" + std::to_string(i))->chunks[0];
          DCPP_CHECK(at::equal(c.tensor, Slice(full[i], c.box)), "t", i, " ", c.box.ToString(),
                     " differs (", src[i].ToString(), " -> ", dst[i].ToString(), ")");
        }
        DCPP_CHECK(sd.FindBytes("meta")->data == "blob", "bytes entry");
      });
      ASSERT_EQ(Joined(errors), "");
    }
  }
}

TEST(Dedup, ReplicatedTensorHeldByFourRanksIsStoredOnce) {
  TempDir dir;
  const at::Tensor big = at::arange(16 << 20, at::kFloat);  // 64 MiB
  std::vector<SaveStats> stats(4);
  const auto errors = RunRanks(4, [&](int rank, Comm& comm) {
    StateDict sd;
    sd.AddTensor("embedding", big);
    SaveOptions so;
    so.comm = &comm;
    stats[rank] = save(sd, dir.path(), so);
  });
  ASSERT_EQ(Joined(errors), "");
  int64_t total = 0;
  for (const SaveStats& s : stats) total += s.bytes_written;
  EXPECT_EQ(total, 64 << 20);
  const proto::Metadata md = ReadMd(dir);
  ASSERT_EQ(md.tensors_size(), 1);
  EXPECT_EQ(md.tensors(0).chunks_size(), 1);
}

TEST(Dedup, WritersAreBalancedByBytes) {
  TempDir dir;
  std::mt19937 rng(3);
  std::vector<at::Tensor> tensors;
  for (int i = 0; i < 60; ++i) tensors.push_back(at::zeros({static_cast<int64_t>(1000 + rng() % 50000)}));
  std::vector<SaveStats> stats(4);
  const auto errors = RunRanks(4, [&](int rank, Comm& comm) {
    StateDict sd;
    for (size_t i = 0; i < tensors.size(); ++i) sd.AddTensor("w" + std::to_string(i), tensors[i]);
    SaveOptions so;
    so.comm = &comm;
    stats[rank] = save(sd, dir.path(), so);
  });
  ASSERT_EQ(Joined(errors), "");
  int64_t lo = INT64_MAX, hi = 0, total = 0;
  for (const SaveStats& s : stats) {
    lo = std::min(lo, s.bytes_written);
    hi = std::max(hi, s.bytes_written);
    total += s.bytes_written;
  }
  int64_t expect = 0;
  for (const at::Tensor& t : tensors) expect += t.numel() * 4;
  EXPECT_EQ(total, expect);
  EXPECT_LE(hi, lo * 1.10) << "max " << hi << " min " << lo;
}

// A writer whose rank fails partway through its data, as a full disk would.
class FailingWriter final : public StorageWriter {
 public:
  explicit FailingWriter(std::string dir) : inner_(std::move(dir)) {}
  void Begin(bool wait) override { inner_.Begin(wait); }
  void End() override { inner_.End(); }
  int FirstFreeFileIndex() override { return inner_.FirstFreeFileIndex(); }
  bool HasCommitted() override { return inner_.HasCommitted(); }
  std::vector<std::string> CommittedFiles() override { return inner_.CommittedFiles(); }
  std::unique_ptr<FileSink> Open(const std::string& name) override {
    inner_.Open(name);  // the file exists, half written, as after a real failure
    throw Error("No space left on device: " + name);
  }
  CommitReport Commit(const std::string& md, const std::vector<std::string>& keep) override { return inner_.Commit(md, keep); }
  void Abort(const std::vector<std::string>& created) override { inner_.Abort(created); }
  std::string Describe() const override { return inner_.Describe(); }

 private:
  FileSystemWriter inner_;
};

TEST(Failure, OneRankThrowsDuringWriteEveryRankFailsNothingCommits) {
  TempDir dir;
  const at::Tensor v1 = at::arange(64, at::kFloat).reshape({8, 8});
  ASSERT_EQ(Joined(RunRanks(3, [&](int rank, Comm& comm) {
              StateDict sd;
              sd.AddSharded("w", v1, Layout::Sharded(3, 0), rank);
              SaveOptions so;
              so.comm = &comm;
              save(sd, dir.path(), so);
            })),
            "");
  std::ifstream old_md(dir / ".metadata", std::ios::binary);
  const std::string before(std::istreambuf_iterator<char>(old_md), {});

  const auto errors = RunRanks(3, [&](int rank, Comm& comm) {
    StateDict sd;
    sd.AddSharded("w", v1 * 2, Layout::Sharded(3, 0), rank);
    SaveOptions so;
    so.comm = &comm;
    if (rank == 1) {
      FailingWriter w(dir.path());
      save(sd, w, so);
    } else {
      save(sd, dir.path(), so);
    }
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_NE(errors[r].find("rank 1: No space left on device"), std::string::npos) << "rank " << r << ": " << errors[r];
  }
  std::ifstream after_md(dir / ".metadata", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(after_md), {}), before);
  StateDict back;
  back.AddTensor("w", at::zeros({8, 8}));
  load(back, dir.path());
  EXPECT_TRUE(at::equal(back.FindTensor("w")->chunks[0].tensor, v1));
  // The failed save's files are gone; only the committed checkpoint's remain.
  int data_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) data_files += e.path().extension() == ".distcp";
  EXPECT_EQ(data_files, 3);
}

TEST(Failure, FirstSaveFailingLeavesNoMetadata) {
  TempDir dir;
  const auto errors = RunRanks(2, [&](int rank, Comm& comm) {
    StateDict sd;
    sd.AddTensor("w", at::ones({4}));
    sd.AddTensor("v" + std::to_string(rank), at::ones({4}));
    SaveOptions so;
    so.comm = &comm;
    if (rank == 0) {
      FailingWriter w(dir.path());
      save(sd, w, so);
    } else {
      save(sd, dir.path(), so);
    }
  });
  EXPECT_NE(errors[1].find("rank 0: No space left"), std::string::npos) << errors[1];
  EXPECT_FALSE(std::filesystem::exists(dir / ".metadata"));
}

}  // namespace
}  // namespace dcpp
