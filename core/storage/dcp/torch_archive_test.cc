// torch.save archives written and read back by torch_archive: a tensor's archive, a plain
// object's, and CRC-32.
#include "core/storage/dcp/torch_archive.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include "core/storage/dcp/dcp_test_util.h"
#include "core/storage/dcp/pickle.h"

namespace dcpp {
namespace {

TEST(TorchArchive, TensorArchiveReadsBackAndObjectsRoundTrip) {
  const at::Tensor t = Values({3, 4}, at::kBFloat16, 5);
  const torch_archive::TensorArchive a("bfloat16", {3, 4}, 24);
  std::string archive = a.prefix();
  archive.append(static_cast<const char*>(t.const_data_ptr()), 24);
  archive += a.suffix(torch_archive::Crc32(t.const_data_ptr(), 24));
  EXPECT_EQ(archive.size(), a.prefix().size() + 24 + a.suffix_size());
  EXPECT_EQ(a.prefix().size() % 64, 0u);  // the data is 64-byte aligned, as torch.save does

  const pickle::ValuePtr v = torch_archive::DecodeObject(archive, "archive");
  ASSERT_TRUE(v->IsObjectOf("torch", "Tensor")) << pickle::Repr(*v);
  EXPECT_EQ(v->state->Get("dtype")->str, "bfloat16");
  EXPECT_EQ(v->state->Get("data")->str, std::string(static_cast<const char*>(t.const_data_ptr()), 24));

  using pickle::Value;
  const pickle::ValuePtr obj = Value::Dict({{Value::Str("step"), Value::Int(7)},
                                            {Value::Str("xs"), Value::List({Value::Float(1.5), Value::Str("a")})}});
  const pickle::ValuePtr back = torch_archive::DecodeObject(torch_archive::EncodeObject(*obj), "obj");
  EXPECT_EQ(pickle::Repr(*back), pickle::Repr(*obj));
  EXPECT_TRUE(torch_archive::IsTorchSaveArchive(archive));
  EXPECT_FALSE(torch_archive::IsTorchSaveArchive("PK\x03\x04 but not a zip at all, no"));
}

TEST(TorchArchive, Crc32CombinesPieces) {
  const std::string a = "hello ", b = "world";
  EXPECT_EQ(torch_archive::Crc32Combine(torch_archive::Crc32(a.data(), a.size()),
                                        torch_archive::Crc32(b.data(), b.size()), b.size()),
            torch_archive::Crc32((a + b).data(), a.size() + b.size()));
  EXPECT_EQ(torch_archive::Crc32("123456789", 9), 0xCBF43926u);  // the standard check value
}

TEST(TorchArchive, Crc32AgreesWithZlibAtEveryLengthAndAlignment) {
  // Crc32 is libdeflate's (PCLMULQDQ folding with scalar heads and tails): it must give zlib's
  // value for any start alignment and length, whole or continued piece by piece.
  std::mt19937_64 rng(17);
  std::vector<unsigned char> buf((1 << 20) + 256);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (size_t n : {1023, 1024, 1025, 4095, 4096, 65537, 1 << 20}) lengths.push_back(n);
  for (int i = 0; i < 40; ++i) lengths.push_back(static_cast<size_t>(rng() % (1 << 20)));
  for (size_t n : lengths) {
    for (size_t align : {0, 1, 3, 7, 8, 15, 16, 31, 63}) {
      const unsigned char* p = buf.data() + align;
      const auto want = static_cast<uint32_t>(::crc32(0, p, static_cast<uInt>(n)));
      ASSERT_EQ(torch_archive::Crc32(p, n), want) << "length " << n << ", alignment " << align;
      const size_t cut = n == 0 ? 0 : static_cast<size_t>(rng() % (n + 1));
      ASSERT_EQ(torch_archive::Crc32(p + cut, n - cut, torch_archive::Crc32(p, cut)), want)
          << "length " << n << " continued after " << cut;
      ASSERT_EQ(torch_archive::Crc32Combine(torch_archive::Crc32(p, cut), torch_archive::Crc32(p + cut, n - cut),
                                            n - cut),
                want)
          << "length " << n << " combined at " << cut;
    }
  }
  EXPECT_EQ(torch_archive::Crc32(nullptr, 0, 0x1234u), 0x1234u);
}

}  // namespace
}  // namespace dcpp
