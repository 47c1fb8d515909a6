// torch.save archives written and read back by torch_archive: a tensor's archive, a plain
// object's, and CRC-32.
#include "core/storage/dcp/torch_archive.h"

#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace dcpp
