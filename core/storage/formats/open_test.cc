// DetectFormat / OpenReader / OpenWriter: native, PyTorch DCP and safetensors checkpoints,
// and paths that hold none.
#include "core/storage/open.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/testing/errors.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using testing::ErrorOf;
using testing::TempDir;
using testing::WriteFile;

TEST(Open, DetectsEachFormat) {
  TempDir dir;
  std::filesystem::create_directories(dir / "native");
  WriteFile(dir / "native/.metadata", std::string("\x08\x01", 2));
  EXPECT_EQ(DetectFormat(dir / "native"), Format::kNative);
  EXPECT_EQ(OpenReader(dir / "native")->Describe(), dir / "native");

  std::filesystem::create_directories(dir / "dcp");
  WriteFile(dir / "dcp/.metadata", "\x80\x04\x95");
  EXPECT_EQ(DetectFormat(dir / "dcp"), Format::kDcp);
  // A DcpReader: the truncated pickle is reported when the metadata is read.
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir / "dcp")->ReadMetadata(); }), "truncated");

  std::filesystem::create_directories(dir / "st");
  WriteFile(dir / "st/model.safetensors", std::string(8, '\0'));
  EXPECT_EQ(DetectFormat(dir / "st"), Format::kSafetensors);
  EXPECT_EQ(DetectFormat(dir / "st/model.safetensors"), Format::kSafetensors);
  EXPECT_EQ(OpenReader(dir / "st/model.safetensors")->Describe(), dir / "st");

  EXPECT_STREQ(FormatName(Format::kNative), "native");
  EXPECT_STREQ(FormatName(Format::kDcp), "dcp");
  EXPECT_STREQ(FormatName(Format::kSafetensors), "safetensors");
}

TEST(Open, WritersAndFormatNames) {
  TempDir dir;
  EXPECT_EQ(ParseFormat("dcp"), Format::kDcp);
  EXPECT_EQ(ParseFormat("native"), Format::kNative);
  EXPECT_HAS(ErrorOf([&] { ParseFormat("hdf5"); }), "unknown checkpoint format 'hdf5'");
  EXPECT_TRUE(OpenWriter(dir / "a", Format::kDcp)->EncodesBytes());
  EXPECT_FALSE(OpenWriter(dir / "b", Format::kNative)->EncodesBytes());
  EXPECT_HAS(ErrorOf([&] { OpenWriter(dir / "c", Format::kSafetensors); }), "export_safetensors");
}

TEST(Open, NamesThePathWhenThereIsNoCheckpoint) {
  TempDir dir;
  EXPECT_HAS(ErrorOf([&] { DetectFormat(dir / "none"); }), "no checkpoint at " + dir.path() + "/none: no such file");
  EXPECT_HAS(ErrorOf([&] { OpenReader(dir.path()); }),
             "no checkpoint in " + dir.path() + ": " + dir.path() + "/.metadata is missing");
  WriteFile(dir / "notes.txt", "hello");
  EXPECT_HAS(ErrorOf([&] { DetectFormat(dir / "notes.txt"); }), "no checkpoint at " + dir.path() + "/notes.txt");
}

}  // namespace
}  // namespace dcpp
