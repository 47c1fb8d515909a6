#include "core/storage/testing/conformance.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>
#include <vector>

#include "core/storage/open.h"
#include "core/testing/errors.h"
#include "core/testing/fault_env.h"
#include "core/testing/temp_dir.h"

namespace dcpp::testing {
namespace {

namespace fs = std::filesystem;

// One registered test: runs `body` with the format's parameters.
class ConformanceTest : public ::testing::Test {
 public:
  ConformanceTest(ConformanceParams p, std::function<void(const ConformanceParams&)> body)
      : p_(std::move(p)), body_(std::move(body)) {}
  void TestBody() override { body_(p_); }

 private:
  ConformanceParams p_;
  std::function<void(const ConformanceParams&)> body_;
};

// Values that are exact in every dtype below (small integers), different per element.
at::Tensor Values(c10::ScalarType dtype, std::vector<int64_t> shape, int64_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  at::Tensor t = (at::arange(n, at::kLong) * 7 + seed) % 100;
  if (dtype == at::kBool) return (t % 2 == 0).reshape(shape);
  if (dtype == at::kFloat4_e2m1fn_x2) return t.to(at::kByte).view(dtype).reshape(shape);  // no conversion
  return t.to(dtype).reshape(shape);
}

// Same dtype, shape and bytes (at::equal has no kernel for the MX/NVFP4 dtypes).
bool SameBits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor x = a.contiguous(), y = b.contiguous();
  return x.numel() == 0 || std::memcmp(x.const_data_ptr(), y.const_data_ptr(), x.nbytes()) == 0;
}

// A state dict of one generation: the same keys and shapes, every value depends on `gen`.
StateDict Generation(int64_t gen, bool bytes) {
  StateDict sd;
  sd.AddTensor("w", Values(at::kFloat, {16, 8}, gen));
  sd.AddTensor("b", Values(at::kFloat, {8}, gen + 1));
  if (bytes) sd.AddBytes("step", "step " + std::to_string(gen));
  return sd;
}

// Loads the checkpoint in `dir` (found by OpenReader) into zeros of the generation's shapes.
StateDict LoadLike(const ConformanceParams& p, const std::string& dir, bool bytes) {
  StateDict sd;
  sd.AddTensor("w", at::zeros({16, 8}, at::kFloat));
  sd.AddTensor("b", at::zeros({8}, at::kFloat));
  if (bytes) sd.AddBytes("step", "");
  load(sd, *OpenReader(dir), p.load);
  return sd;
}

// A loaded bytes entry as the blob that was saved.
std::string Blob(const ConformanceParams& p, const std::string& loaded) {
  return p.decode_bytes ? p.decode_bytes(loaded) : loaded;
}

// `loaded` (as load() returned it) holds what `saved` does.
bool SameGeneration(const ConformanceParams& p, const StateDict& loaded, const StateDict& saved) {
  const StateDict& a = loaded;
  const StateDict& b = saved;
  for (const char* key : {"w", "b"}) {
    if (!at::equal(a.FindTensor(key)->chunks[0].tensor, b.FindTensor(key)->chunks[0].tensor)) return false;
  }
  const BytesEntry* x = a.FindBytes("step");
  const BytesEntry* y = b.FindBytes("step");
  return (x == nullptr) == (y == nullptr) && (x == nullptr || Blob(p, x->data) == y->data);
}

// The data files of a checkpoint folder: everything but hidden files, largest first.
std::vector<std::string> DataFiles(const std::string& dir) {
  std::vector<std::pair<uintmax_t, std::string>> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name[0] != '.' && name.find(".json") == std::string::npos) {
      files.emplace_back(e.file_size(), e.path().string());
    }
  }
  std::sort(files.rbegin(), files.rend());
  std::vector<std::string> out;
  for (auto& f : files) out.push_back(std::move(f.second));
  return out;
}

void EveryDtypeAndShapeRoundTrips(const ConformanceParams& p) {
  const c10::ScalarType dtypes[] = {at::kFloat, at::kDouble,  at::kHalf,  at::kBFloat16, at::kChar,
                                    at::kByte,  at::kShort,   at::kInt,   at::kLong,     at::kBool,
                                    at::kFloat8_e8m0fnu, at::kFloat4_e2m1fn_x2};
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {5}, {3, 0}, {3, 4, 5}};
  StateDict sd, back;
  int k = 0;
  for (c10::ScalarType dt : dtypes) {
    for (const auto& shape : shapes) {
      // safetensors' F4 has no 0-d form (its shape counts 4-bit values); that refusal is
      // tested beside the export.
      if (dt == at::kFloat4_e2m1fn_x2 && shape.empty()) continue;
      const std::string key = "t" + std::to_string(k++);
      sd.AddTensor(key, Values(dt, shape, k));
      back.AddTensor(key, at::zeros({c10::multiply_integers(shape) * static_cast<int64_t>(c10::elementSize(dt))},
                                    at::kByte).view(dt).view(shape));
    }
  }
  TempDir dir;
  p.save(sd, dir / "ckpt");
  EXPECT_EQ(DetectFormat(dir / "ckpt"), p.format);
  load(back, *OpenReader(dir / "ckpt"), p.load);
  for (const TensorEntry& e : sd.tensors()) {
    const at::Tensor& got = back.FindTensor(e.fqn)->chunks[0].tensor;
    EXPECT_EQ(got.scalar_type(), e.dtype) << e.fqn;
    EXPECT_TRUE(SameBits(got, e.chunks[0].tensor)) << e.fqn << " (" << c10::toString(e.dtype) << ")";
  }
}

void RowWiseLoadsColumnWise(const ConformanceParams& p) {
  const at::Tensor full = Values(at::kFloat, {8, 6}, 3);
  StateDict rows;
  for (int r = 0; r < 2; ++r) rows.AddSharded("m", full, Layout::Sharded(2, 0), r);
  TempDir dir;
  p.save(rows, dir / "ckpt");
  StateDict cols;
  for (int r = 0; r < 3; ++r) cols.AddSharded("m", at::zeros({8, 6}), Layout::Sharded(3, 1), r);
  load(cols, *OpenReader(dir / "ckpt"), p.load);
  const TensorEntry* m = cols.FindTensor("m");
  ASSERT_EQ(m->chunks.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_TRUE(at::equal(m->chunks[r].tensor, full.narrow(1, 2 * r, 2))) << "column shard " << r;
  }
}

void BytesEntriesRoundTrip(const ConformanceParams& p) {
  if (!p.stores_bytes) GTEST_SKIP() << "the format holds tensors only";
  StateDict sd;
  sd.AddBytes("blob", std::string("\0\x01\xff binary", 10));
  sd.AddBytes("empty", "");
  sd.AddTensor("x", Values(at::kInt, {4}, 1));
  TempDir dir;
  p.save(sd, dir / "ckpt");
  StateDict back;
  back.AddBytes("blob", "");
  back.AddBytes("empty", "unchanged?");
  back.AddTensor("x", at::zeros({4}, at::kInt));
  load(back, *OpenReader(dir / "ckpt"), p.load);
  EXPECT_EQ(Blob(p, back.FindBytes("blob")->data), std::string("\0\x01\xff binary", 10));
  EXPECT_EQ(Blob(p, back.FindBytes("empty")->data), "");
}

void AnOverwriteCommitsTheNewCheckpointAndLeavesNoStrays(const ConformanceParams& p) {
  TempDir dir;
  p.save(Generation(1, p.stores_bytes), dir / "ckpt");
  p.save(Generation(2, p.stores_bytes), dir / "ckpt");
  EXPECT_TRUE(SameGeneration(p, LoadLike(p, dir / "ckpt", p.stores_bytes), Generation(2, p.stores_bytes)));
  p.save(Generation(2, p.stores_bytes), dir / "fresh");
  EXPECT_EQ(DataFiles(dir / "ckpt").size(), DataFiles(dir / "fresh").size())
      << "files of the overwritten generation are left behind";
}

void AFailedSaveLeavesThePreviousCheckpoint(const ConformanceParams& p) {
  if (!p.writer) GTEST_SKIP() << "not a save target";
  TempDir dir;
  const std::string ckpt = dir / "ckpt";
  p.save(Generation(1, p.stores_bytes), ckpt);
  // Fail each of the first operations of an overwriting save in turn (ENOSPC).
  int failed = 0;
  for (int64_t at = 0; at < 40; ++at) {
    FaultEnv env;
    env.Arm(FaultEnv::Fault::kEnospc, at);
    try {
      save(Generation(2, p.stores_bytes), *p.writer(ckpt, &env));
    } catch (const Error& e) {
      ++failed;
      EXPECT_HAS(e.what(), "No space left on device");
    }
    // Either generation, never a broken folder; put generation 1 back for the next round.
    const StateDict got = LoadLike(p, ckpt, p.stores_bytes);
    EXPECT_TRUE(SameGeneration(p, got, Generation(1, p.stores_bytes)) ||
                SameGeneration(p, got, Generation(2, p.stores_bytes)))
        << "operation " << at;
    if (!env.fired()) break;
    p.save(Generation(1, p.stores_bytes), ckpt);
  }
  EXPECT_GT(failed, 0);
}

void ACorruptDataFileIsAnErrorNamingIt(const ConformanceParams& p) {
  if (!p.detects_corruption) GTEST_SKIP() << "the format records no checksums";
  TempDir dir;
  p.save(Generation(1, false), dir / "ckpt");
  const std::vector<std::string> files = DataFiles(dir / "ckpt");
  ASSERT_FALSE(files.empty());
  // Flip a byte of "w" (the largest tensor): the last of its 512 bytes, at the end of the data
  // in every format here (safetensors and native put the largest first; DCP's item is
  // followed by its archive's directory).
  const std::string file = files[0];
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const at::Tensor w = Values(at::kFloat, {16, 8}, 1);
  const std::string wbytes(static_cast<const char*>(w.data_ptr()), 512);
  // (Compressed: a byte in the middle of the file, inside some item's compressed data.)
  const size_t pos = p.stores_plain ? bytes.find(wbytes) : bytes.size() / 2 - 300;
  ASSERT_NE(pos, std::string::npos) << "the tensor's bytes are not stored as they are in " << file;
  bytes[pos + 300] ^= 0x10;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
  const std::string err = ErrorOf([&] { LoadLike(p, dir / "ckpt", false); });
  EXPECT_HAS(err, fs::path(file).filename().string());
}

void ATruncatedDataFileIsAnErrorNamingIt(const ConformanceParams& p) {
  TempDir dir;
  p.save(Generation(1, false), dir / "ckpt");
  const std::vector<std::string> files = DataFiles(dir / "ckpt");
  ASSERT_FALSE(files.empty());
  fs::resize_file(files[0], fs::file_size(files[0]) / 2);
  const std::string err = ErrorOf([&] {
    // (A format whose header sits at the start notices when the folder is opened.)
    LoadLike(p, dir / "ckpt", false);
  });
  EXPECT_HAS(err, fs::path(files[0]).filename().string());
}

void AMissingKeyIsAnErrorNamingIt(const ConformanceParams& p) {
  TempDir dir;
  p.save(Generation(1, false), dir / "ckpt");
  StateDict sd;
  sd.AddTensor("not.saved", at::zeros({2}));
  EXPECT_HAS(ErrorOf([&] { load(sd, *OpenReader(dir / "ckpt"), p.load); }), "not.saved");
}

}  // namespace

void RegisterStorageConformanceTests(const ConformanceParams& params) {
  using Body = void (*)(const ConformanceParams&);
  const std::pair<const char*, Body> tests[] = {
      {"EveryDtypeAndShapeRoundTrips", EveryDtypeAndShapeRoundTrips},
      {"RowWiseLoadsColumnWise", RowWiseLoadsColumnWise},
      {"BytesEntriesRoundTrip", BytesEntriesRoundTrip},
      {"AnOverwriteCommitsTheNewCheckpointAndLeavesNoStrays", AnOverwriteCommitsTheNewCheckpointAndLeavesNoStrays},
      {"AFailedSaveLeavesThePreviousCheckpoint", AFailedSaveLeavesThePreviousCheckpoint},
      {"ACorruptDataFileIsAnErrorNamingIt", ACorruptDataFileIsAnErrorNamingIt},
      {"ATruncatedDataFileIsAnErrorNamingIt", ATruncatedDataFileIsAnErrorNamingIt},
      {"AMissingKeyIsAnErrorNamingIt", AMissingKeyIsAnErrorNamingIt},
  };
  for (const auto& [name, body] : tests) {
    ::testing::RegisterTest(params.suite.c_str(), name, nullptr, nullptr, __FILE__, __LINE__,
                            [params, body = body]() -> ::testing::Test* { return new ConformanceTest(params, body); });
  }
}

}  // namespace dcpp::testing
