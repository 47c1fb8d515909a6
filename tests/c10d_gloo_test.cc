// c10d through the path dcpp's Comm will use: a gloo Backend made from a c10d Store, and an
// all-gather of byte buffers (serialized plans) of different lengths across two ranks.
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

namespace {

std::vector<std::string> AllGatherStrings(c10d::Backend& pg, const std::string& mine) {
  // Lengths first, then the payload padded to the longest, as a variable-size gather must.
  const int world = pg.getSize();
  std::vector<at::Tensor> lens_out(world);
  for (auto& t : lens_out) t = at::empty({1}, at::kLong);
  std::vector<at::Tensor> lens_in = {at::full({1}, static_cast<int64_t>(mine.size()), at::kLong)};
  std::vector<std::vector<at::Tensor>> lens_outs = {lens_out};
  pg.allgather(lens_outs, lens_in)->wait();
  int64_t max_len = 0;
  for (auto& t : lens_outs[0]) max_len = std::max(max_len, t.item<int64_t>());
  at::Tensor buf = at::zeros({max_len}, at::kByte);
  std::memcpy(buf.data_ptr(), mine.data(), mine.size());
  std::vector<at::Tensor> out(world);
  for (auto& t : out) t = at::empty({max_len}, at::kByte);
  std::vector<std::vector<at::Tensor>> outs = {out};
  std::vector<at::Tensor> in = {buf};
  pg.allgather(outs, in)->wait();
  std::vector<std::string> result;
  for (int r = 0; r < world; ++r) {
    result.emplace_back(static_cast<const char*>(outs[0][r].data_ptr()),
                        static_cast<size_t>(lens_outs[0][r].item<int64_t>()));
  }
  return result;
}

TEST(C10dGloo, AllGatherBytesAcrossTwoRanks) {
  char tmpl[] = "/tmp/dcpp_c10d_store_XXXXXX";
  const int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  close(fd);
  unlink(tmpl);
  const std::string path = tmpl;
  constexpr int kWorld = 2;
  std::vector<std::vector<std::string>> got(kWorld);
  std::vector<std::string> errors(kWorld);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kWorld; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        auto store = c10::make_intrusive<c10d::FileStore>(path, kWorld);
        auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(30));
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, kWorld, opts);
        got[rank] = AllGatherStrings(*pg, "plan-of-rank-" + std::to_string(rank) +
                                              std::string(rank * 5, '!'));
      } catch (const std::exception& e) {
        errors[rank] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  unlink(path.c_str());
  for (int rank = 0; rank < kWorld; ++rank) {
    ASSERT_EQ(errors[rank], "") << "rank " << rank;
    ASSERT_EQ(got[rank].size(), 2u);
    EXPECT_EQ(got[rank][0], "plan-of-rank-0");
    EXPECT_EQ(got[rank][1], "plan-of-rank-1!!!!!");
  }
}

}  // namespace
