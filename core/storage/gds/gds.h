// Optional GPUDirect Storage (NVIDIA cuFile) reads: file bytes DMA'd straight into GPU memory,
// without passing through a host buffer.
//
// When the load engine uses it. Only for a native-format chunk that is read whole and
// contiguous straight into a CUDA target tensor, when LoadOptions::gpudirect is on and checksum
// verification is off: the bytes never reach host memory, so their XXH3 cannot be checked.
// Everything else (other formats, partial or strided reads, CPU targets, verification on) and
// every failure to get a driver or open a file falls back to the ordinary path, through pinned
// host staging buffers. A failure of Read itself is an error (dcpp::Error), not a fallback: the
// target may already be partly overwritten.
//
// No build-time dependency. libcufile is loaded with dlopen on first use, and the few types and
// entry points used here are declared in gds.cc from the ABI of cufile.h (cuFile 1.x, CUDA 12/13).
// Device pointers are plain void*, so this compiles in the CPU build as well. Where it looks for
// the library, in order:
//   - $DCPP_CUFILE_LIB, when set: that file only (a wrong path is reported, not skipped);
//   - "libcufile.so.0" through the dynamic loader (LD_LIBRARY_PATH, ldconfig);
//   - the NVIDIA wheels next to an already-loaded library from a Python site-packages folder
//     (torch's libc10.so, say): <site>/nvidia/cu13/lib, <site>/nvidia/cufile/lib (CUDA 12's
//     nvidia-cufile-cu12), <site>/nvidia/cu12/lib; and the folder of a loaded libcudart;
//   - $CUDA_HOME/lib64 and /usr/local/cuda/lib64.
// DCPP_GDS=0 (or off/false/no) turns it off: GdsDriver::Get then returns nullptr, "disabled".
//
// On a machine or filesystem without the nvidia-fs kernel module, cuFile may run in its
// "compat mode" (POSIX reads through its own pinned buffers): still correct, not faster.
// cuFile writes its log to ./cufile.log unless CUFILE_LOGFILE_PATH or cufile.json
// (CUFILE_ENV_PATH_JSON) say otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <sys/types.h>

namespace dcpp {

namespace gds_internal {
struct CufileApi;  // the dlopen'ed entry points (gds.cc)
}  // namespace gds_internal

// The process-wide cuFile driver: loaded and opened once, on the first Get(), and closed at
// process exit. Thread-safe.
class GdsDriver {
 public:
  // The driver, or nullptr with the reason in *why_not (may be null): disabled by DCPP_GDS=0,
  // library not found (naming every place it looked), a symbol missing, or cuFileDriverOpen
  // failed (with cuFile's error name and code). The outcome of the first call is kept for the
  // process, except DCPP_GDS=0, which is read on every call. Call it once CUDA is initialised
  // (the engine has a CUDA target by then), so that the driver is closed before CUDA at exit.
  static GdsDriver* Get(std::string* why_not);

  ~GdsDriver();  // cuFileDriverClose
  GdsDriver(const GdsDriver&) = delete;
  GdsDriver& operator=(const GdsDriver&) = delete;

  const std::string& library() const;  // the libcufile file that was loaded
  int version() const;                  // cuFileGetVersion: 1000*major + 10*minor; 0 if unknown

  // Pins a device buffer for GPUDirect DMA (cuFileBufRegister). Optional: a read into memory
  // that is not registered goes through cuFile's internal bounce buffers, which is fine for
  // reads straight into freshly allocated tensors; register only a buffer reused by many reads.
  // False with the reason when cuFile refuses.
  bool RegisterBuffer(void* device_ptr, size_t n, std::string* why_not);
  void DeregisterBuffer(void* device_ptr);

  const gds_internal::CufileApi& api() const { return *api_; }

 private:
  friend std::unique_ptr<GdsDriver> OpenGdsDriverUncached(std::string* why_not);
  explicit GdsDriver(std::unique_ptr<gds_internal::CufileApi> api);
  std::unique_ptr<gds_internal::CufileApi> api_;
};

// One data file registered with cuFile. Used by one thread at a time, like a FileSource.
class GdsFile {
 public:
  // Opens `path` O_RDONLY|O_DIRECT (without O_DIRECT where the filesystem refuses it, e.g.
  // tmpfs on older kernels; direct_io() is then false and *why_not says so even on success) and
  // registers it with the process-wide driver. nullptr with the reason, which names the path,
  // when the file cannot be opened, the driver is unavailable, or cuFileHandleRegister fails.
  static std::unique_ptr<GdsFile> Open(const std::string& path, std::string* why_not);

  ~GdsFile();  // cuFileHandleDeregister, close
  GdsFile(const GdsFile&) = delete;
  GdsFile& operator=(const GdsFile&) = delete;

  // Reads exactly `n` bytes at `file_offset` into GPU memory at `device_ptr`, looping over short
  // reads. Throws dcpp::Error naming the file, the offset and cuFile's error (or errno), or
  // saying the file ends first.
  void Read(void* device_ptr, size_t n, uint64_t file_offset);

  const std::string& path() const { return path_; }
  bool direct_io() const { return direct_io_; }

 private:
  friend std::unique_ptr<GdsFile> OpenGdsFileWith(const gds_internal::CufileApi& api,
                                                  const std::string& path, std::string* why_not);
  GdsFile(const gds_internal::CufileApi& api, std::string path, int fd, bool direct_io,
          void* handle);
  const gds_internal::CufileApi& api_;
  std::string path_;
  int fd_;
  bool direct_io_;
  void* handle_;  // CUfileHandle_t
};

// Building blocks of the above, uncached, for tests and diagnostics.

// A new driver, not the cached one: the DCPP_GDS check, the library search and
// cuFileDriverOpen. Destroying it closes the driver.
std::unique_ptr<GdsDriver> OpenGdsDriverUncached(std::string* why_not);

// GdsFile::Open against the given entry points instead of the process-wide driver's.
std::unique_ptr<GdsFile> OpenGdsFileWith(const gds_internal::CufileApi& api,
                                         const std::string& path, std::string* why_not);

namespace gds_internal {

// The cuFile status struct (CUfileError_t): a CUfileOpError (0 = success, otherwise 5000 + n)
// and, for CU_FILE_CUDA_DRIVER_ERROR, the CUDA driver's CUresult.
struct CufileStatus {
  int err;
  int cu_err;
};

// The entry points used, as resolved from the library (or filled in by a test).
struct CufileApi {
  std::string library;
  void* dl = nullptr;  // dlopen handle; never closed once a driver is open
  int version = 0;
  CufileStatus (*driver_open)() = nullptr;
  CufileStatus (*driver_close)() = nullptr;
  CufileStatus (*handle_register)(void** handle, void* descr) = nullptr;  // CUfileDescr_t*
  void (*handle_deregister)(void* handle) = nullptr;
  ssize_t (*read)(void* handle, void* buf, size_t size, off_t file_offset,
                  off_t buf_offset) = nullptr;
  CufileStatus (*buf_register)(const void* buf, size_t size, int flags) = nullptr;
  CufileStatus (*buf_deregister)(const void* buf) = nullptr;
  CufileStatus (*get_version)(int* version) = nullptr;  // optional
};

// dlopens `path` (a file or a bare soname) and resolves the entry points. nullptr with a reason
// naming `path` when it cannot be loaded or lacks a symbol (then it is closed again).
std::unique_ptr<CufileApi> LoadCufile(const std::string& path, std::string* why_not);

// The places to look when DCPP_CUFILE_LIB is unset, in order, given the paths of the loaded
// shared objects and $CUDA_HOME (empty if unset). Deduplicated.
std::vector<std::string> CufileCandidates(const std::vector<std::string>& loaded_objects,
                                          const std::string& cuda_home);

// The first candidate that loads (absolute paths that do not exist are skipped); nullptr with a
// reason naming every candidate and why it failed.
std::unique_ptr<CufileApi> FindCufile(const std::vector<std::string>& candidates,
                                      std::string* why_not);

// Paths of the shared objects loaded in this process (dl_iterate_phdr).
std::vector<std::string> LoadedObjects();

// "CU_FILE_IO_NOT_SUPPORTED (5008)", with the CUDA driver error for CU_FILE_CUDA_DRIVER_ERROR.
std::string CufileStatusName(CufileStatus status);
// The name of a CUfileOpError value (positive), e.g. "CU_FILE_INVALID_VALUE".
std::string CufileErrorName(int code);

// True when DCPP_GDS turns GPUDirect Storage off ("0", "off", "false", "no").
bool DisabledByEnv();

}  // namespace gds_internal
}  // namespace dcpp
