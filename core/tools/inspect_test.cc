// InspectJson / InspectText on checkpoints saved by the real engine.
#include "core/tools/inspect.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/format/metadata.pb.h"
#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"
#include "core/tools/sample_checkpoint.h"

namespace dcpp {
namespace {

using testing::Md;
using testing::SaveSample;
using testing::SumOfLengths;
using testing::TempDir;
using testing::Tensor;

bool IsHex16(const std::string& s) {
  return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

TEST(InspectJson, DescribesEveryKeyAndChunk) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  const nlohmann::json j = InspectJson(md);
  EXPECT_EQ(j["format"], "dcpp");
  EXPECT_EQ(j["format_version"], "1.1");
  EXPECT_EQ(j["creator"], "dcpp");
  EXPECT_EQ(j["world_size"], 1);
  EXPECT_EQ(j["checksum_algorithm"], "xxh3_64");
  EXPECT_TRUE(j["planner_data"].is_object());

  std::vector<std::string> keys;
  for (const auto& t : j["tensors"]) keys.push_back(t["key"]);
  EXPECT_EQ(keys, (std::vector<std::string>{"grid", "net1.bias", "net1.weight", "step"}));
  const auto& w = j["tensors"][2];
  EXPECT_EQ(w["dtype"], "float32");
  EXPECT_EQ(w["shape"], (std::vector<int64_t>{16, 10}));
  EXPECT_EQ(w["numel"], 160);
  EXPECT_EQ(w["bytes"], 640);
  ASSERT_EQ(w["chunks"].size(), 2u);
  const auto& meta_w = Tensor(md, "net1.weight");
  for (size_t i = 0; i < 2; ++i) {
    const auto& c = w["chunks"][i];
    EXPECT_EQ(c["sizes"], (std::vector<int64_t>{8, 10}));
    EXPECT_EQ(c["length"], 320);
    EXPECT_EQ(c["file"], meta_w.chunks(static_cast<int>(i)).file());
    EXPECT_EQ(c["offset"], meta_w.chunks(static_cast<int>(i)).offset());
    const std::string sum = c["checksum"];
    EXPECT_TRUE(IsHex16(sum)) << sum;
    EXPECT_EQ(std::stoull(sum, nullptr, 16), meta_w.chunks(static_cast<int>(i)).checksum());
  }
  const auto& step = j["tensors"][3];
  EXPECT_TRUE(step["shape"].empty());
  ASSERT_EQ(step["chunks"].size(), 1u);
  EXPECT_TRUE(step["chunks"][0]["offsets"].empty());
  EXPECT_EQ(j["tensors"][0]["chunks"].size(), 4u);

  ASSERT_EQ(j["bytes"].size(), 1u);
  EXPECT_EQ(j["bytes"][0]["key"], "rng");
  EXPECT_EQ(j["bytes"][0]["length"], 7);
  EXPECT_TRUE(IsHex16(j["bytes"][0]["checksum"]));

  const auto& totals = j["totals"];
  EXPECT_EQ(totals["tensors"], 4);
  EXPECT_EQ(totals["bytes_entries"], 1);
  EXPECT_EQ(totals["chunks"], 2 + 1 + 1 + 4);
  EXPECT_EQ(totals["bytes"], SumOfLengths(md));
  EXPECT_EQ(totals["files"], 2);
  ASSERT_EQ(j["files"].size(), 2u);
  int64_t file_bytes = 0, entries = 0;
  for (const auto& f : j["files"]) {
    file_bytes += f["bytes"].get<int64_t>();
    entries += f["entries"].get<int64_t>();
  }
  EXPECT_EQ(file_bytes, totals["bytes"].get<int64_t>());
  EXPECT_EQ(entries, 9);
  // Stable: the same metadata gives the same text.
  EXPECT_EQ(j.dump(), InspectJson(Md(dir)).dump());
}

TEST(InspectText, ListsKeysInOrderWithTheirChunks) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  const std::string text = InspectText(md);
  EXPECT_HAS(text, "format 1.1");
  EXPECT_HAS(text, "xxh3_64");
  EXPECT_HAS(text, "[16, 10]");
  EXPECT_HAS(text, "[0:8, 0:10]");
  EXPECT_HAS(text, "[8:16, 0:10]");
  EXPECT_HAS(text, "[4:8, 0:4]");
  EXPECT_HAS(text, Tensor(md, "net1.weight").chunks(0).file());
  EXPECT_HAS(text, "int64");
  EXPECT_HAS(text, "rng");
  EXPECT_HAS(text, "4 tensors, 1 bytes entries, 8 chunks, " + std::to_string(SumOfLengths(md)) + " bytes in 2 files");
  EXPECT_LT(text.find("grid"), text.find("net1.bias"));
  EXPECT_LT(text.find("net1.bias"), text.find("net1.weight"));
  EXPECT_LT(text.find("net1.weight"), text.find("step"));
  EXPECT_EQ(text.rfind("dcpp checkpoint, format 1.1\n", 0), 0u) << text;
}

TEST(InspectText, EveryKeyIsVisibleAndAligned) {
  EXPECT_EQ(DisplayKey("net1.weight"), "net1.weight");
  EXPECT_EQ(DisplayKey("a b..c."), "a b..c.");
  EXPECT_EQ(DisplayKey(""), "\"\"");
  EXPECT_EQ(DisplayKey(" "), "\" \"");
  EXPECT_EQ(DisplayKey("x "), "\"x \"");
  EXPECT_EQ(DisplayKey("a\tb"), "\"a\\tb\"");
  EXPECT_EQ(DisplayKey("\"q\""), "\"\\\"q\\\"\"");
  proto::Metadata md;
  for (const std::string key : {"", "\xc3\xbc" "ber", "x"}) {
    proto::TensorMeta* t = md.add_tensors();
    t->set_fqn(key);
    t->set_dtype("float32");
  }
  const std::string text = InspectText(md);
  EXPECT_HAS(text, "\n  \"\"    float32");
  EXPECT_HAS(text, "\n  \xc3\xbc" "ber  float32");  // 4 characters wide, like the header's "key "
  EXPECT_HAS(text, "\n  x     float32");
}

TEST(InspectText, SaysWhatKindOfCheckpointItIs) {
  TempDir dir;
  SaveSample(dir);
  const proto::Metadata md = Md(dir);
  for (const auto& [format, title] : std::vector<std::pair<std::string, std::string>>{
           {"native", "dcpp checkpoint, format 1.1"},
           {"dcp", "PyTorch DCP checkpoint"},
           {"safetensors", "safetensors checkpoint"},
           {"zarr", "zarr checkpoint"}}) {
    EXPECT_EQ(FormatTitle(md, format), title);
    const std::string text = InspectText(md, format);
    EXPECT_EQ(text.substr(0, text.find('\n')), title);
    EXPECT_EQ(InspectJson(md, format)["format"], format == "native" ? "dcpp" : format);
  }
}

}  // namespace
}  // namespace dcpp
