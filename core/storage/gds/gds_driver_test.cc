// GPUDirect Storage's driver (core/storage/gds/gds.h) without a GPU: every way of not getting
// one says why (disabled, library missing or not libcufile, cuFileDriverOpen failing), and the
// search for libcufile beside torch's libraries. GdsFile is tested in gds_file_test.cc.
#include "core/storage/gds/gds.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Context.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/storage/gds/gds_test_util.h"
#include "core/testing/temp_dir.h"

namespace dcpp {
namespace {

using gds_internal::CufileApi;
using gds_testing::ScopedEnv;
using gds_testing::WriteFile;
using ::testing::HasSubstr;

bool LibcudaLoadable() {
  void* dl = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (dl != nullptr) ::dlclose(dl);
  return dl != nullptr;
}

// --- The driver -------------------------------------------------------------------------------

TEST(GdsDriver, WithoutAGpuGetReturnsNullWithAReason) {
  if (at::hasCUDA() || LibcudaLoadable()) GTEST_SKIP() << "a CUDA driver is present";
  ScopedEnv gds("DCPP_GDS", std::nullopt);
  std::string why;
  EXPECT_EQ(GdsDriver::Get(&why), nullptr);
  ASSERT_FALSE(why.empty());
  // Either libcufile was found and its driver refused to open (no libcuda), or it was not found
  // and the reason lists where it looked.
  if (why.find("cuFileDriverOpen failed") != std::string::npos) {
    EXPECT_THAT(why, HasSubstr("CU_FILE_"));
    EXPECT_THAT(why, HasSubstr("libcufile"));
  } else {
    EXPECT_THAT(why, HasSubstr("libcufile not found"));
    EXPECT_THAT(why, HasSubstr("libcufile.so.0"));
  }
  // Cached: the same answer again, and a null why_not is fine.
  std::string again;
  EXPECT_EQ(GdsDriver::Get(&again), nullptr);
  EXPECT_EQ(again, why);
  EXPECT_EQ(GdsDriver::Get(nullptr), nullptr);
}

TEST(GdsDriver, DisabledByDcppGds) {
  for (const char* off : {"0", "off", "false"}) {
    ScopedEnv gds("DCPP_GDS", std::string(off));
    EXPECT_TRUE(gds_internal::DisabledByEnv()) << off;
    std::string why;
    EXPECT_EQ(GdsDriver::Get(&why), nullptr);
    EXPECT_THAT(why, HasSubstr("disabled"));
    EXPECT_THAT(why, HasSubstr(std::string("DCPP_GDS=") + off));
    why.clear();
    EXPECT_EQ(OpenGdsDriverUncached(&why), nullptr);
    EXPECT_THAT(why, HasSubstr("disabled"));
  }
  {
    ScopedEnv gds("DCPP_GDS", std::string("1"));
    EXPECT_FALSE(gds_internal::DisabledByEnv());
  }
  ScopedEnv gds("DCPP_GDS", std::nullopt);
  EXPECT_FALSE(gds_internal::DisabledByEnv());
}

TEST(GdsDriver, CufileLibPointingAtAMissingFileIsNamed) {
  ScopedEnv gds("DCPP_GDS", std::nullopt);
  const std::string missing = "/nonexistent/dcpp/libcufile.so.0";
  ScopedEnv lib("DCPP_CUFILE_LIB", missing);
  std::string why;
  EXPECT_EQ(OpenGdsDriverUncached(&why), nullptr);
  EXPECT_THAT(why, HasSubstr("DCPP_CUFILE_LIB=" + missing));
  EXPECT_THAT(why, HasSubstr("cannot load"));
  // Only that file is tried: nothing about other places.
  EXPECT_EQ(why.find("tried"), std::string::npos) << why;
}

TEST(GdsDriver, CufileLibPointingAtAnotherLibraryIsNamed) {
  ScopedEnv gds("DCPP_GDS", std::nullopt);
  ScopedEnv lib("DCPP_CUFILE_LIB", std::string("libz.so.1"));
  std::string why;
  EXPECT_EQ(OpenGdsDriverUncached(&why), nullptr);
  EXPECT_THAT(why, HasSubstr("libz.so.1"));
  EXPECT_THAT(why, HasSubstr("not a usable libcufile"));
  EXPECT_THAT(why, HasSubstr("cuFileDriverOpen"));
  EXPECT_THAT(why, HasSubstr("cuFileRead"));
}

TEST(GdsDriver, RealLibcufileWithoutACudaDriverFailsToOpenWithItsErrorCode) {
  if (at::hasCUDA() || LibcudaLoadable()) GTEST_SKIP() << "a CUDA driver is present";
  std::string why;
  std::unique_ptr<CufileApi> api = gds_internal::FindCufile(
      gds_internal::CufileCandidates(gds_internal::LoadedObjects(), ""), &why);
  if (api == nullptr) GTEST_SKIP() << "no libcufile here: " << why;
  ScopedEnv gds("DCPP_GDS", std::nullopt);
  ScopedEnv lib("DCPP_CUFILE_LIB", api->library);
  why.clear();
  EXPECT_EQ(OpenGdsDriverUncached(&why), nullptr);
  EXPECT_THAT(why, HasSubstr("cuFileDriverOpen failed: CU_FILE_"));
  EXPECT_THAT(why, HasSubstr(api->library));
}

// --- Finding and loading libcufile --------------------------------------------------------------

TEST(CufileSearch, CandidatesFromLoadedLibraries) {
  const std::vector<std::string> loaded = {
      "/venv/lib/python3.11/site-packages/torch/lib/libc10.so",
      "/venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so",  // same site: no repeats
      "/opt/cuda-13/lib64/libcudart.so.13",
      "/usr/lib/x86_64-linux-gnu/libm.so.6",
      "/usr/lib/python3/dist-packages/nvidia/cu13/lib/libnvrtc.so.13",
  };
  const std::vector<std::string> expected = {
      "libcufile.so.0",
      "/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcufile.so.0",
      "/venv/lib/python3.11/site-packages/nvidia/cufile/lib/libcufile.so.0",
      "/venv/lib/python3.11/site-packages/nvidia/cu12/lib/libcufile.so.0",
      "/opt/cuda-13/lib64/libcufile.so.0",
      "/usr/lib/python3/dist-packages/nvidia/cu13/lib/libcufile.so.0",
      "/usr/lib/python3/dist-packages/nvidia/cufile/lib/libcufile.so.0",
      "/usr/lib/python3/dist-packages/nvidia/cu12/lib/libcufile.so.0",
      "/cuda/lib64/libcufile.so.0",
      "/usr/local/cuda/lib64/libcufile.so.0",
  };
  EXPECT_EQ(gds_internal::CufileCandidates(loaded, "/cuda"), expected);
  EXPECT_EQ(gds_internal::CufileCandidates({}, ""),
            (std::vector<std::string>{"libcufile.so.0", "/usr/local/cuda/lib64/libcufile.so.0"}));
}

TEST(CufileSearch, LoadedObjectsIncludeTorch) {
  // This test links torch, as the engine does; its libraries are where the search starts.
  const std::vector<std::string> loaded = gds_internal::LoadedObjects();
  EXPECT_TRUE(std::any_of(loaded.begin(), loaded.end(), [](const std::string& p) {
    return p.find("libc10.so") != std::string::npos;
  }));
}

TEST(CufileSearch, FindsTheWheelBesideTorch) {
  const std::vector<std::string> candidates =
      gds_internal::CufileCandidates(gds_internal::LoadedObjects(), "");
  std::vector<std::string> present;
  for (const std::string& c : candidates) {
    if (c.find("/nvidia/") != std::string::npos && ::access(c.c_str(), F_OK) == 0) {
      present.push_back(c);
    }
  }
  if (present.empty()) GTEST_SKIP() << "torch's Python environment has no nvidia-cufile wheel";
  std::string why;
  std::unique_ptr<CufileApi> api = gds_internal::LoadCufile(present[0], &why);
  ASSERT_NE(api, nullptr) << why;
  EXPECT_EQ(api->library, present[0]);
  EXPECT_GE(api->version, 1000);  // cuFile 1.x reports 1000*major + 10*minor
  EXPECT_NE(api->driver_open, nullptr);
  EXPECT_NE(api->driver_close, nullptr);
  EXPECT_NE(api->read, nullptr);
}

TEST(CufileSearch, NotFoundSaysWhereItLooked) {
  std::string why;
  EXPECT_EQ(gds_internal::FindCufile({"libcufile-dcpp-missing.so.0",
                                      "/nonexistent/nvidia/cu13/lib/libcufile.so.0"},
                                     &why),
            nullptr);
  EXPECT_THAT(why, HasSubstr("libcufile not found"));
  EXPECT_THAT(why, HasSubstr("cannot load libcufile-dcpp-missing.so.0: "));
  EXPECT_THAT(why, HasSubstr("(loader search path)"));
  EXPECT_THAT(why, HasSubstr("/nonexistent/nvidia/cu13/lib/libcufile.so.0 (absent)"));
  EXPECT_THAT(why, HasSubstr("DCPP_CUFILE_LIB"));
}

TEST(CufileSearch, AFileThatIsNotALibraryIsNamed) {
  testing::TempDir dir;
  const std::string fake = dir / "libcufile.so.0";
  WriteFile(fake, "not an ELF file");
  std::string why;
  EXPECT_EQ(gds_internal::LoadCufile(fake, &why), nullptr);
  EXPECT_THAT(why, HasSubstr("cannot load " + fake));
  // FindCufile goes on past it to the next candidate.
  why.clear();
  EXPECT_EQ(gds_internal::FindCufile({fake, "libz.so.1"}, &why), nullptr);
  EXPECT_THAT(why, HasSubstr("cannot load " + fake));
  EXPECT_THAT(why, HasSubstr("libz.so.1 is not a usable libcufile"));
}

TEST(CufileStatusName, NamesAndCodes) {
  EXPECT_EQ(gds_internal::CufileStatusName({5033, 0}), "CU_FILE_NVFS_SETUP_ERROR (5033)");
  EXPECT_EQ(gds_internal::CufileStatusName({5008, 0}), "CU_FILE_IO_NOT_SUPPORTED (5008)");
  EXPECT_EQ(gds_internal::CufileStatusName({5011, 100}),
            "CU_FILE_CUDA_DRIVER_ERROR (5011), CUDA driver error 100");
  EXPECT_EQ(gds_internal::CufileErrorName(5022), "CU_FILE_INVALID_VALUE");
  EXPECT_EQ(gds_internal::CufileErrorName(4999), "unknown cuFile error");
}

}  // namespace
}  // namespace dcpp
