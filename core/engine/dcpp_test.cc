// The engine in one process: the seeds' single-process scenarios (PyTorch's DCP tests).
#include "core/dcpp.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/format/metadata.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::TempDir;

StateDict PlainStateDict(int64_t seed) {
  at::manual_seed(seed);
  StateDict sd;
  sd.AddTensor("net1.weight", at::rand({16, 10}));
  sd.AddTensor("net1.bias", at::rand({16}));
  sd.AddTensor("net2.weight", at::rand({10, 16}));
  sd.AddTensor("net2.bias", at::rand({10}));
  sd.AddTensor("step", at::scalar_tensor(7, at::kLong));
  return sd;
}

void ExpectSameValues(const StateDict& a, const StateDict& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const TensorEntry& e : a.tensors()) {
    const TensorEntry* f = b.FindTensor(e.fqn);
    ASSERT_NE(f, nullptr) << e.fqn;
    ASSERT_EQ(e.chunks.size(), f->chunks.size()) << e.fqn;
    for (size_t i = 0; i < e.chunks.size(); ++i) {
      EXPECT_TRUE(at::equal(e.chunks[i].tensor, f->chunks[i].tensor)) << e.fqn;
    }
  }
}

bool AnyDifferent(const StateDict& a, const StateDict& b) {
  for (const TensorEntry& e : a.tensors()) {
    if (!at::equal(e.chunks[0].tensor, b.FindTensor(e.fqn)->chunks[0].tensor)) return true;
  }
  return false;
}

// Many small tensors share pages: chunks under 4 KiB start at 64-byte boundaries right after
// the previous item, larger ones on a 4 KiB boundary; every value comes back.
TEST(Layout, SmallChunksArePackedLargeOnesPageAligned) {
  TempDir dir;
  StateDict saved;
  at::manual_seed(3);
  for (int i = 0; i < 40; ++i) saved.AddTensor("norm" + std::to_string(i), at::rand({3}));  // 12 bytes
  saved.AddTensor("big", at::rand({2048}));                                                // 8 KiB
  saved.AddTensor("odd", at::rand({1000}));                                                // 4000 bytes
  save(saved, dir.path(), SaveOptions());
  const proto::Metadata md = ParseMetadata(testing::ReadFile(dir / ".metadata"), dir.path());
  uint64_t small_end = 0;
  int small = 0;
  for (const auto& t : md.tensors()) {
    ASSERT_EQ(t.chunks_size(), 1) << t.fqn();
    const auto& c = t.chunks(0);
    if (c.length() >= kChunkAlignment) {
      EXPECT_EQ(c.offset() % kChunkAlignment, 0u) << t.fqn();
    } else {
      EXPECT_EQ(c.offset() % kSmallChunkAlignment, 0u) << t.fqn();
      if (c.length() == 12) {
        small_end = std::max(small_end, c.offset() + c.length());
        ++small;
      }
    }
  }
  EXPECT_EQ(small, 40);
  // 40 items of 12 bytes, 64 bytes apart: within one page, not 40 of them.
  EXPECT_LE(small_end, 4096u + 40 * kSmallChunkAlignment);
  StateDict loaded;
  for (const TensorEntry& e : saved.tensors()) loaded.AddTensor(e.fqn, at::zeros_like(e.chunks[0].tensor));
  load(loaded, dir.path(), LoadOptions());
  ExpectSameValues(saved, loaded);
}

class RoundTrip : public ::testing::TestWithParam<int> {};

// test_file_system_checkpoint_cpu: a plain state dict with 1 and 2 writer threads.
TEST_P(RoundTrip, ValuesDifferBeforeLoadAndAreEqualAfter) {
  TempDir dir;
  const StateDict saved = PlainStateDict(1);
  SaveOptions so;
  so.thread_count = GetParam();
  const SaveStats st = save(saved, dir.path(), so);
  EXPECT_EQ(st.items_written, 5);
  EXPECT_EQ(st.files, std::min(GetParam(), 5));

  StateDict loaded = PlainStateDict(2);
  ASSERT_TRUE(AnyDifferent(saved, loaded));
  // Keep the caller's storage: load must write in place.
  const void* before = loaded.FindTensor("net1.weight")->chunks[0].tensor.data_ptr();
  LoadOptions lo;
  lo.thread_count = GetParam();
  const LoadStats ls = load(loaded, dir.path(), lo);
  ExpectSameValues(saved, loaded);
  EXPECT_EQ(loaded.FindTensor("net1.weight")->chunks[0].tensor.data_ptr(), before);
  EXPECT_EQ(ls.checksums_verified, 5);
  EXPECT_EQ(ls.bytes_read, ls.bytes_needed);
}

INSTANTIATE_TEST_SUITE_P(Threads, RoundTrip, ::testing::Values(1, 2));

// test_file_system_checkpoint_cpu: row-wise (dim 0) shards resharded to column-wise (dim 1),
// with all chunks of a tensor held by one process.
TEST(Reshard, RowWiseToColumnWise) {
  TempDir dir;
  at::manual_seed(3);
  const at::Tensor full = at::rand({8, 12});
  StateDict rows;
  for (int r = 0; r < 4; ++r) rows.AddSharded("t", full, Layout::Sharded(4, 0), r);
  save(rows, dir.path());

  StateDict cols;
  std::vector<at::Tensor> targets;
  for (int r = 0; r < 3; ++r) {
    cols.AddUnallocated("t", at::kFloat, {8, 12}, Layout::Sharded(3, 1), r);
  }
  ASSERT_FALSE(cols.FindTensor("t")->chunks[0].tensor.defined());
  load(cols, dir.path());
  const TensorEntry* t = cols.FindTensor("t");
  ASSERT_EQ(t->chunks.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(at::equal(t->chunks[r].tensor, full.narrow(1, 4 * r, 4))) << "rank " << r;
  }
}

// test_file_system_checkpoint_cpu: bytes entries ([1] and "string") next to tensors.
TEST(Bytes, ObjectsRoundTrip) {
  TempDir dir;
  StateDict sd;
  sd.AddBytes("bytes0", std::string("[1]"));
  sd.AddBytes("bytes1", "string");
  sd.AddBytes("empty", "");
  sd.AddTensor("w", at::arange(6, at::kFloat));
  save(sd, dir.path());

  StateDict back;
  back.AddBytes("bytes0", "");
  back.AddBytes("bytes1", "");
  back.AddBytes("empty", "x");
  back.AddTensor("w", at::zeros({6}));
  load(back, dir.path());
  EXPECT_EQ(back.FindBytes("bytes0")->data, "[1]");
  EXPECT_EQ(back.FindBytes("bytes1")->data, "string");
  EXPECT_EQ(back.FindBytes("empty")->data, "");
  EXPECT_TRUE(at::equal(back.FindTensor("w")->chunks[0].tensor, at::arange(6, at::kFloat)));
}

// test_tp_checkpoint (meta device): uneven TP shards of the 5->10->15->1 model saved over
// 3 ranks, loaded into targets that do not exist yet.
TEST(UnevenShards, LoadIntoUnallocatedTargets) {
  TempDir dir;
  at::manual_seed(5);
  struct P { const char* fqn; std::vector<int64_t> shape; int dim; };
  const std::vector<P> params = {{"model.net1.weight", {10, 5}, 0}, {"model.net1.bias", {10}, 0},
                                 {"model.net2.weight", {15, 10}, 1}, {"model.net2.bias", {15}, -1},
                                 {"model.net3.weight", {1, 15}, 0}, {"model.net3.bias", {1}, 0}};
  constexpr int kWorld = 3;  // 10, 15 and 1 do not divide evenly: some shards are empty
  std::map<std::string, at::Tensor> full;
  StateDict saved;
  for (const P& p : params) {
    full[p.fqn] = at::rand(p.shape);
    const Layout l = p.dim < 0 ? Layout::Replicated(kWorld) : Layout::Sharded(kWorld, p.dim);
    for (int r = 0; r < kWorld; ++r) saved.AddSharded(p.fqn, full[p.fqn], l, r);
  }
  save(saved, dir.path());

  for (int r = 0; r < kWorld; ++r) {
    StateDict target;
    for (const P& p : params) {
      const Layout l = p.dim < 0 ? Layout::Replicated(kWorld) : Layout::Sharded(kWorld, p.dim);
      target.AddUnallocated(p.fqn, at::kFloat, p.shape, l, r);
    }
    load(target, dir.path());
    for (const P& p : params) {
      const LocalChunk& c = target.FindTensor(p.fqn)->chunks[0];
      ASSERT_TRUE(c.tensor.defined() && !c.tensor.is_meta()) << p.fqn;
      at::Tensor expect = full[p.fqn];
      for (size_t d = 0; d < c.box.sizes.size(); ++d) {
        expect = expect.narrow(d, c.box.offsets[d], c.box.sizes[d]);
      }
      EXPECT_TRUE(at::equal(c.tensor, expect)) << p.fqn << " rank " << r;
    }
  }
}

TEST(Layouts, NonContiguousSourcesAndTargets) {
  TempDir dir;
  const at::Tensor base = at::arange(24, at::kInt).reshape({4, 6});
  StateDict sd;
  sd.AddTensor("t", base.t());  // 6x4, transposed view
  save(sd, dir.path());
  at::Tensor storage = at::zeros({4, 6}, at::kInt);
  StateDict back;
  back.AddTensor("t", storage.t());
  load(back, dir.path());
  EXPECT_TRUE(at::equal(storage, base));
}

// Strided chunks go through the staging ring both ways; its host memory stays within the pool
// however large the chunk.
TEST(Staging, HostMemoryIsBoundedByThePool) {
  TempDir dir;
  const at::Tensor base = at::randn({512, 1024});  // 2 MiB
  StateDict sd;
  sd.AddTensor("w", base.t());
  SaveOptions so;
  so.staging_bytes = 64 << 10;
  so.staging_buffers = 2;
  const SaveStats saved = save(sd, dir.path(), so);
  EXPECT_EQ(saved.staged_bytes, base.numel() * 4);
  EXPECT_GT(saved.staging_peak_bytes, 0);
  EXPECT_LE(saved.staging_peak_bytes, 64 << 10);

  at::Tensor storage = at::zeros({512, 1024});
  StateDict back;
  back.AddTensor("w", storage.t());
  LoadOptions lo;
  lo.staging_bytes = 48 << 10;
  lo.staging_buffers = 3;
  const LoadStats loaded = load(back, dir.path(), lo);
  EXPECT_TRUE(at::equal(storage, base));
  EXPECT_EQ(loaded.staged_bytes, base.numel() * 4);
  EXPECT_LE(loaded.staging_peak_bytes, 48 << 10);
  EXPECT_EQ(loaded.checksums_verified, 1);

  // Contiguous CPU chunks bypass the ring: no host memory beyond the tensors themselves.
  StateDict plain;
  plain.AddTensor("w", at::zeros({1024, 512}));
  EXPECT_EQ(load(plain, dir.path(), lo).staged_bytes, 0);
  EXPECT_TRUE(at::equal(plain.FindTensor("w")->chunks[0].tensor, base.t()));

  lo.staging_buffers = 1;
  EXPECT_THROW(load(back, dir.path(), lo), Error);
}

// GPUDirect only applies with checksum verification off; asking for it with verification on
// loads through host memory as usual and says why.
TEST(Staging, GpuDirectWithChecksumsOnSaysWhyItIsNotUsed) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", at::arange(10, at::kFloat));
  save(sd, dir.path());
  StateDict back;
  back.AddTensor("w", at::zeros({10}));
  LoadOptions lo;
  lo.gpudirect = true;
  LoadStats st = load(back, dir.path(), lo);
  EXPECT_EQ(st.gpudirect_bytes, 0);
  EXPECT_NE(st.gpudirect_note.find("checksum verification is on"), std::string::npos);
  EXPECT_TRUE(at::equal(back.FindTensor("w")->chunks[0].tensor, at::arange(10, at::kFloat)));
  lo.verify_checksums = false;  // CPU targets never use it: nothing to say
  st = load(back, dir.path(), lo);
  EXPECT_EQ(st.gpudirect_note, "");
}

}  // namespace
}  // namespace dcpp

namespace dcpp {
namespace {

// LoadOptions::direct_io: the same values as an ordinary load, whole chunks, partial reads
// (a reshard) and staged (non-contiguous) targets alike, from a folder that allows O_DIRECT.
TEST(DirectIo, LoadsTheSameValuesWholePartAndStaged) {
  TempDir dir;
  const StateDict saved = PlainStateDict(1);
  save(saved, dir.path());
  for (int threads : {1, 2}) {
    StateDict loaded = PlainStateDict(2);
    ASSERT_TRUE(AnyDifferent(saved, loaded));
    LoadOptions lo;
    lo.thread_count = threads;
    lo.direct_io = true;
    const LoadStats ls = load(loaded, dir.path(), lo);
    ExpectSameValues(saved, loaded);
    EXPECT_EQ(ls.checksums_verified, 5);
    // The test's temporary folder is on a disk here; where it is not, the note says why.
    if (!ls.direct_io_note.empty()) {
      EXPECT_NE(ls.direct_io_note.find("refuses O_DIRECT"), std::string::npos) << ls.direct_io_note;
    }
  }
  // Row-wise shards read column-wise (partial reads), into transposed (staged) targets.
  TempDir dir2;
  at::manual_seed(5);
  const at::Tensor full = at::rand({64, 96});
  StateDict rows;
  for (int r = 0; r < 4; ++r) rows.AddSharded("t", full, Layout::Sharded(4, 0), r);
  rows.AddTensor("w", full);
  save(rows, dir2.path());
  StateDict cols;
  for (int r = 0; r < 3; ++r) cols.AddUnallocated("t", at::kFloat, {64, 96}, Layout::Sharded(3, 1), r);
  const at::Tensor w = at::zeros({96, 64}).t();  // [64, 96], not contiguous: staged
  cols.AddTensor("w", w);
  LoadOptions lo;
  lo.direct_io = true;
  load(cols, dir2.path(), lo);
  const TensorEntry* t = cols.FindTensor("t");
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(at::equal(t->chunks[r].tensor, full.narrow(1, 32 * r, 32))) << r;
  EXPECT_TRUE(at::equal(w, full));
}

// A corrupt byte read with O_DIRECT is still caught by the checksum, naming the key and file.
TEST(DirectIo, CorruptDataIsStillReported) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", at::arange(100000, at::kFloat));
  save(sd, dir.path());
  const std::string file = dir.path() + "/__0_0.distcp";
  std::string bytes = testing::ReadFile(file);
  bytes[bytes.size() / 2] ^= 0x40;
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  StateDict loaded;
  loaded.AddTensor("w", at::zeros({100000}));
  LoadOptions lo;
  lo.direct_io = true;
  try {
    load(loaded, dir.path(), lo);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch for key 'w'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("__0_0.distcp"), std::string::npos) << e.what();
  }
}

// On a tmpfs, which may refuse O_DIRECT, the load falls back to ordinary reads and says so.
TEST(DirectIo, FallsBackWhereTheFileSystemRefusesIt) {
  if (!std::filesystem::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const std::string path = "/dev/shm/dcpp_direct_io_test_" + std::to_string(::getpid());
  std::filesystem::remove_all(path);
  const StateDict saved = PlainStateDict(1);
  save(saved, path);
  StateDict loaded = PlainStateDict(2);
  LoadOptions lo;
  lo.direct_io = true;
  const LoadStats ls = load(loaded, path, lo);
  ExpectSameValues(saved, loaded);
  const int probe = ::open((path + "/.metadata").c_str(), O_RDONLY | O_DIRECT);
  if (probe >= 0) {
    ::close(probe);
    EXPECT_EQ(ls.direct_io_note, "");
  } else {
    EXPECT_NE(ls.direct_io_note.find("refuses O_DIRECT"), std::string::npos) << ls.direct_io_note;
    EXPECT_NE(ls.direct_io_note.find(path), std::string::npos) << ls.direct_io_note;
  }
  std::filesystem::remove_all(path);
}

}  // namespace
}  // namespace dcpp
