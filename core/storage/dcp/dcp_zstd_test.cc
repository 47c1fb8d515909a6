// DCP items compressed with zstd (PyTorch's `stream.zstd/1` transform): DcpWriter's zstd option
// round trips every dtype (non-contiguous, 0-d, empty chunks and blobs too) through DcpReader,
// load, verify's archive checks and a conversion; corrupt or truncated compressed data and
// transforms dcpp does not read fail naming the key and file.
#include <cstdint>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/dcp.h"
#include "core/storage/dcp/dcp_test_util.h"
#include "core/storage/dcp/pickle.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using pickle::Value;
using testing::ErrorOf;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

DcpWriteOptions Zstd() {
  DcpWriteOptions o;
  o.zstd = true;
  return o;
}

// The _StorageInfo objects of a .metadata pickle, in pickle order.
std::vector<const Value*> StorageInfos(const Value& root) {
  std::vector<const Value*> out;
  for (const auto& [k, v] : root.Attr("storage_data")->dict) out.push_back(v.get());
  return out;
}

TEST(DcpZstd, RoundTripsEveryDtypeAndShrinks) {
  TempDir plain, packed;
  StateDict sd = Sample();
  sd.AddTensor("zeros", at::zeros({256, 256}));  // compresses to almost nothing
  save(sd, DcpWriter(plain.path()));
  save(sd, DcpWriter(packed.path(), Env::Default(), Zstd()));

  // Every item carries the descriptor and lies inside the (smaller) file.
  const pickle::ValuePtr root = pickle::Decode(ReadFile(packed.path() + "/.metadata"),
                                               [](const std::string&, const std::string&) { return true; }, "md");
  int items = 0;
  for (const Value* info : StorageInfos(*root)) {
    const pickle::ValuePtr t = info->Attr("transform_descriptors");
    ASSERT_TRUE(t && t->items.size() == 1) << pickle::Repr(*info, 200);
    EXPECT_EQ(t->items[0]->str, "stream.zstd/1");
    ++items;
  }
  EXPECT_GT(items, 20);
  uint64_t plain_bytes = 0, packed_bytes = 0;
  for (const std::string& f : DcpFiles(ReadFile(plain.path() + "/.metadata"), "p")) {
    plain_bytes += ReadFile(plain.path() + "/" + f).size();
  }
  for (const std::string& f : DcpFiles(ReadFile(packed.path() + "/.metadata"), "z")) {
    packed_bytes += ReadFile(packed.path() + "/" + f).size();
  }
  EXPECT_LT(packed_bytes * 4, plain_bytes);

  DcpReader reader(packed.path());
  StateDict got = Targets(sd), want = Targets(sd);
  LoadOptions lo;
  lo.verify_dcp_crc32 = true;
  load(got, reader, lo);
  load(want, DcpReader(plain.path()));
  for (const TensorEntry& e : sd.tensors()) EXPECT_TRUE(Same(Full(got, e.fqn), Full(sd, e.fqn))) << e.fqn;
  // (the blob as DCP stores it: a torch.save archive of the bytes)
  EXPECT_EQ(got.FindBytes("blob")->data, want.FindBytes("blob")->data);
  EXPECT_NE(got.FindBytes("blob")->data.find(std::string("raw\0bytes\xff", 10)), std::string::npos);
  EXPECT_GT(reader.crc_checked(), 20);  // torch.save's CRC-32s hold on the decompressed bytes

  const DcpArchiveCheck check = CheckDcpArchives(packed.path());
  EXPECT_TRUE(check.problems.empty()) << check.problems[0];
  EXPECT_EQ(check.items, items);
}

// Compressed byte `at` of the item of key `fqn` flipped.
void CorruptItem(const std::string& dir, const std::string& fqn, uint64_t at) {
  const pickle::ValuePtr root = pickle::Decode(ReadFile(dir + "/.metadata"),
                                               [](const std::string&, const std::string&) { return true; }, "md");
  for (const auto& [k, v] : root->Attr("storage_data")->dict) {
    if (k->Attr("fqn")->str != fqn) continue;
    const std::string path = dir + "/" + v->Attr("relative_path")->str;
    std::string data = ReadFile(path);
    const uint64_t offset = static_cast<uint64_t>(v->Attr("offset")->i);
    const uint64_t length = static_cast<uint64_t>(v->Attr("length")->i);
    ASSERT_LT(at, length);
    data[offset + at] ^= 0x5a;
    WriteFile(path, data);
    return;
  }
  FAIL() << "no item of " << fqn;
}

TEST(DcpZstd, CorruptCompressedDataNamesKeyAndFile) {
  TempDir dir;
  StateDict sd;
  sd.AddTensor("w", Values({128, 64}, at::kFloat, 1));
  sd.AddTensor("v", Values({8}, at::kFloat, 2));
  save(sd, DcpWriter(dir.path(), Env::Default(), Zstd()));
  CorruptItem(dir.path(), "w", 40);
  const std::string err = ErrorOf([&] {
    StateDict t = Targets(sd);
    load(t, DcpReader(dir.path()));
  });
  EXPECT_HAS(err, "key 'w'");
  EXPECT_HAS(err, "__0_0.distcp");
  EXPECT_HAS(err, "zstd");
  const DcpArchiveCheck check = CheckDcpArchives(dir.path());
  ASSERT_EQ(check.problems.size(), 1u);
  EXPECT_HAS(check.problems[0], "key 'w'");
  EXPECT_HAS(check.problems[0], "zstd");
}

TEST(DcpZstd, UnknownTransformsAreRefusedByName) {
  for (const char* d : {"stream.zstd/2", "stream.aes/1", "stream.zstd"}) {
    const std::string descriptor = d;
    TempDir dir;
    StateDict sd;
    sd.AddTensor("w", Values({4}, at::kFloat, 1));
    save(sd, DcpWriter(dir.path(), Env::Default(), Zstd()));
    std::string md = ReadFile(dir.path() + "/.metadata");
    const std::string want = "stream.zstd/1";
    ASSERT_NE(md.find(want), std::string::npos);
    // A same-length or shorter string in the pickle: rewrite the pickle via its value instead.
    pickle::ValuePtr root = pickle::Decode(md, [](const std::string&, const std::string&) { return true; }, "md");
    for (auto& [k, v] : root->Attr("storage_data")->dict) {
      for (auto& [name, value] : v->state->dict) {
        if (name->str == "transform_descriptors") value = Value::List({Value::Str(descriptor)});
      }
    }
    pickle::Writer w(2);
    WriteFile(dir.path() + "/.metadata", w.Put(*root).Finish());
    StateDict t = Targets(sd);
    const std::string err = ErrorOf([&] { load(t, DcpReader(dir.path())); });
    EXPECT_HAS(err, "storage of key 'w' uses stream transforms ['" + descriptor + "']");
    EXPECT_HAS(err, "dcpp reads one 'stream.zstd/1'");
  }
}

}  // namespace
}  // namespace dcpp
