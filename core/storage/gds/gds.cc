#include "core/storage/gds/gds.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "core/base/error.h"

namespace dcpp {

using gds_internal::CufileApi;
using gds_internal::CufileStatus;

namespace {

// cuFile's ABI, as cufile.h declares it (the header itself is not used, so the CPU build needs
// nothing from CUDA):
//   CUfileError_t   struct { CUfileOpError err; CUresult cu_err; }  two 4-byte enums,
//                   returned by value                               -> CufileStatus
//   CUfileHandle_t  void*
//   CUfileDescr_t   struct { enum CUfileFileHandleType type; union { int fd; void* handle; }
//                   handle; const CUfileFSOps_t* fs_ops; }          -> FileDescr below
//   cuFileRead      ssize_t (CUfileHandle_t, void* buf_base, size_t, off_t file_offset,
//                   off_t buf_offset); >= 0 bytes read, -1 with errno, or -CUfileOpError
//   cuFileDriverClose is a macro for the cuFileDriverClose_v2 symbol in current headers.
struct FileDescr {
  int type;  // CUfileFileHandleType
  union {
    int fd;
    void* handle;
  } handle;
  const void* fs_ops;  // CUfileFSOps_t*; null: the kernel's VFS
};
constexpr int kHandleTypeOpaqueFd = 1;  // CU_FILE_HANDLE_TYPE_OPAQUE_FD
static_assert(sizeof(CufileStatus) == 8, "CUfileError_t is two 4-byte enums");
static_assert(sizeof(FileDescr) == 3 * sizeof(void*), "CUfileDescr_t layout (LP64)");

constexpr int kCudaDriverError = 5011;  // CU_FILE_CUDA_DRIVER_ERROR

// CUfileOpError values (5000 + n) and their names.
struct NamedCode {
  int code;
  const char* name;
};
constexpr NamedCode kErrorNames[] = {
    {0, "CU_FILE_SUCCESS"},
    {5001, "CU_FILE_DRIVER_NOT_INITIALIZED"},
    {5002, "CU_FILE_DRIVER_INVALID_PROPS"},
    {5003, "CU_FILE_DRIVER_UNSUPPORTED_LIMIT"},
    {5004, "CU_FILE_DRIVER_VERSION_MISMATCH"},
    {5005, "CU_FILE_DRIVER_VERSION_READ_ERROR"},
    {5006, "CU_FILE_DRIVER_CLOSING"},
    {5007, "CU_FILE_PLATFORM_NOT_SUPPORTED"},
    {5008, "CU_FILE_IO_NOT_SUPPORTED"},
    {5009, "CU_FILE_DEVICE_NOT_SUPPORTED"},
    {5010, "CU_FILE_NVFS_DRIVER_ERROR"},
    {5011, "CU_FILE_CUDA_DRIVER_ERROR"},
    {5012, "CU_FILE_CUDA_POINTER_INVALID"},
    {5013, "CU_FILE_CUDA_MEMORY_TYPE_INVALID"},
    {5014, "CU_FILE_CUDA_POINTER_RANGE_ERROR"},
    {5015, "CU_FILE_CUDA_CONTEXT_MISMATCH"},
    {5016, "CU_FILE_INVALID_MAPPING_SIZE"},
    {5017, "CU_FILE_INVALID_MAPPING_RANGE"},
    {5018, "CU_FILE_INVALID_FILE_TYPE"},
    {5019, "CU_FILE_INVALID_FILE_OPEN_FLAG"},
    {5020, "CU_FILE_DIO_NOT_SET"},
    {5022, "CU_FILE_INVALID_VALUE"},
    {5023, "CU_FILE_MEMORY_ALREADY_REGISTERED"},
    {5024, "CU_FILE_MEMORY_NOT_REGISTERED"},
    {5025, "CU_FILE_PERMISSION_DENIED"},
    {5026, "CU_FILE_DRIVER_ALREADY_OPEN"},
    {5027, "CU_FILE_HANDLE_NOT_REGISTERED"},
    {5028, "CU_FILE_HANDLE_ALREADY_REGISTERED"},
    {5029, "CU_FILE_DEVICE_NOT_FOUND"},
    {5030, "CU_FILE_INTERNAL_ERROR"},
    {5031, "CU_FILE_GETNEWFD_FAILED"},
    {5033, "CU_FILE_NVFS_SETUP_ERROR"},
    {5034, "CU_FILE_IO_DISABLED"},
    {5035, "CU_FILE_BATCH_SUBMIT_FAILED"},
    {5036, "CU_FILE_GPU_MEMORY_PINNING_FAILED"},
    {5037, "CU_FILE_BATCH_FULL"},
    {5038, "CU_FILE_ASYNC_NOT_SUPPORTED"},
    {5039, "CU_FILE_INTERNAL_BATCH_SETUP_ERROR"},
    {5040, "CU_FILE_INTERNAL_BATCH_SUBMIT_ERROR"},
    {5041, "CU_FILE_INTERNAL_BATCH_GETSTATUS_ERROR"},
    {5042, "CU_FILE_INTERNAL_BATCH_CANCEL_ERROR"},
    {5043, "CU_FILE_NOMEM_ERROR"},
    {5044, "CU_FILE_IO_ERROR"},
    {5045, "CU_FILE_INTERNAL_BUF_REGISTER_ERROR"},
    {5046, "CU_FILE_HASH_OPR_ERROR"},
    {5047, "CU_FILE_INVALID_CONTEXT_ERROR"},
    {5048, "CU_FILE_NVFS_INTERNAL_DRIVER_ERROR"},
    {5049, "CU_FILE_BATCH_NOCOMPAT_ERROR"},
    {5050, "CU_FILE_IO_MAX_ERROR"},
};

constexpr char kSoname[] = "libcufile.so.0";

std::string DlError() {
  const char* e = ::dlerror();
  return e ? e : "unknown dlopen error";
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void SetReason(std::string* why_not, std::string reason) {
  if (why_not != nullptr) *why_not = std::move(reason);
}

// Resolves `name` into `*fn`; false (and a note in *missing) when the library lacks it.
template <typename Fn>
bool Resolve(void* dl, const char* name, Fn* fn, std::string* missing) {
  ::dlerror();
  void* sym = ::dlsym(dl, name);
  if (sym == nullptr) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
    return false;
  }
  *fn = reinterpret_cast<Fn>(sym);
  return true;
}

std::string Errno(int e) { return std::strerror(e); }

std::string DisabledReason() {
  return StrCat("GPUDirect Storage disabled by DCPP_GDS=", std::getenv("DCPP_GDS"));
}

}  // namespace

namespace gds_internal {

std::string CufileErrorName(int code) {
  for (const NamedCode& c : kErrorNames) {
    if (c.code == code) return c.name;
  }
  return "unknown cuFile error";
}

std::string CufileStatusName(CufileStatus status) {
  std::string s = StrCat(CufileErrorName(status.err), " (", status.err, ")");
  if (status.err == kCudaDriverError) s += StrCat(", CUDA driver error ", status.cu_err);
  return s;
}

bool DisabledByEnv() {
  const char* v = std::getenv("DCPP_GDS");
  if (v == nullptr) return false;
  const std::string s = v;
  return s == "0" || s == "off" || s == "OFF" || s == "false" || s == "FALSE" || s == "no";
}

std::unique_ptr<CufileApi> LoadCufile(const std::string& path, std::string* why_not) {
  ::dlerror();
  void* dl = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (dl == nullptr) {
    // dlerror() usually starts with the file name already.
    const std::string err = DlError();
    SetReason(why_not, err.rfind(path + ": ", 0) == 0 ? StrCat("cannot load ", err)
                                                       : StrCat("cannot load ", path, ": ", err));
    return nullptr;
  }
  auto api = std::make_unique<CufileApi>();
  api->library = path;
  api->dl = dl;
  std::string missing;
  Resolve(dl, "cuFileDriverOpen", &api->driver_open, &missing);
  // Current headers map cuFileDriverClose to cuFileDriverClose_v2; older libraries have only
  // the plain name.
  if (::dlsym(dl, "cuFileDriverClose_v2") != nullptr) {
    Resolve(dl, "cuFileDriverClose_v2", &api->driver_close, &missing);
  } else {
    Resolve(dl, "cuFileDriverClose", &api->driver_close, &missing);
  }
  Resolve(dl, "cuFileHandleRegister", &api->handle_register, &missing);
  Resolve(dl, "cuFileHandleDeregister", &api->handle_deregister, &missing);
  Resolve(dl, "cuFileRead", &api->read, &missing);
  Resolve(dl, "cuFileBufRegister", &api->buf_register, &missing);
  Resolve(dl, "cuFileBufDeregister", &api->buf_deregister, &missing);
  if (!missing.empty()) {
    ::dlclose(dl);
    SetReason(why_not, StrCat(path, " is not a usable libcufile: it lacks ", missing));
    return nullptr;
  }
  std::string optional;
  if (Resolve(dl, "cuFileGetVersion", &api->get_version, &optional)) {
    int v = 0;
    if (api->get_version(&v).err == 0) api->version = v;
  }
  // Name the file actually loaded when a bare soname was given.
  if (path.find('/') == std::string::npos && api->driver_open != nullptr) {
    Dl_info info;
    if (::dladdr(reinterpret_cast<void*>(api->driver_open), &info) != 0 &&
        info.dli_fname != nullptr) {
      api->library = info.dli_fname;
    }
  }
  return api;
}

std::vector<std::string> CufileCandidates(const std::vector<std::string>& loaded_objects,
                                          const std::string& cuda_home) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& c) {
    if (seen.insert(c).second) out.push_back(c);
  };
  add(kSoname);
  for (const std::string& obj : loaded_objects) {
    // A Python environment's NVIDIA wheels, found from any library loaded out of it (torch's).
    for (const char* site : {"/site-packages/", "/dist-packages/"}) {
      const size_t at = obj.find(site);
      if (at == std::string::npos) continue;
      const std::string root = obj.substr(0, at + std::strlen(site)) + "nvidia/";
      for (const char* sub : {"cu13", "cufile", "cu12"}) add(StrCat(root, sub, "/lib/", kSoname));
    }
    // Beside the CUDA runtime in use (a toolkit's lib64, or a wheel's lib folder).
    if (Basename(obj).rfind("libcudart.so", 0) == 0) add(StrCat(Dirname(obj), "/", kSoname));
  }
  for (const std::string& home : {cuda_home, std::string("/usr/local/cuda")}) {
    if (home.empty()) continue;
    add(StrCat(home, "/lib64/", kSoname));
  }
  return out;
}

std::unique_ptr<CufileApi> FindCufile(const std::vector<std::string>& candidates,
                                      std::string* why_not) {
  std::string tried;
  for (const std::string& c : candidates) {
    if (!tried.empty()) tried += "; ";
    if (c.find('/') != std::string::npos && ::access(c.c_str(), F_OK) != 0) {
      tried += c + " (absent)";
      continue;
    }
    std::string reason;
    auto api = LoadCufile(c, &reason);
    if (api != nullptr) return api;
    tried += c.find('/') == std::string::npos ? StrCat(reason, " (loader search path)") : reason;
  }
  SetReason(why_not, StrCat("libcufile not found (install the nvidia-cufile wheel, or set "
                            "DCPP_CUFILE_LIB to its path); tried: ",
                            tried));
  return nullptr;
}

std::vector<std::string> LoadedObjects() {
  std::vector<std::string> out;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') {
          static_cast<std::vector<std::string>*>(data)->push_back(info->dlpi_name);
        }
        return 0;
      },
      &out);
  return out;
}

}  // namespace gds_internal

using gds_internal::CufileStatusName;

namespace {

// $DCPP_CUFILE_LIB alone when set, else the first of the usual places that loads.
std::unique_ptr<CufileApi> LocateCufile(std::string* why_not) {
  if (const char* env = std::getenv("DCPP_CUFILE_LIB"); env != nullptr && env[0] != '\0') {
    std::string reason;
    auto api = gds_internal::LoadCufile(env, &reason);
    if (api == nullptr) SetReason(why_not, StrCat("DCPP_CUFILE_LIB=", env, ": ", reason));
    return api;
  }
  const char* cuda_home = std::getenv("CUDA_HOME");
  return gds_internal::FindCufile(
      gds_internal::CufileCandidates(gds_internal::LoadedObjects(), cuda_home ? cuda_home : ""),
      why_not);
}

}  // namespace

GdsDriver::GdsDriver(std::unique_ptr<CufileApi> api) : api_(std::move(api)) {}

GdsDriver::~GdsDriver() {
  // The library stays loaded: cuFile may still have threads of its own winding down.
  if (api_ && api_->driver_close) api_->driver_close();
}

const std::string& GdsDriver::library() const { return api_->library; }
int GdsDriver::version() const { return api_->version; }

bool GdsDriver::RegisterBuffer(void* device_ptr, size_t n, std::string* why_not) {
  const CufileStatus st = api_->buf_register(device_ptr, n, 0);
  if (st.err == 0) return true;
  SetReason(why_not, StrCat("cuFileBufRegister of ", n, " bytes at ", device_ptr, " failed: ",
                            CufileStatusName(st)));
  return false;
}

void GdsDriver::DeregisterBuffer(void* device_ptr) { api_->buf_deregister(device_ptr); }

std::unique_ptr<GdsDriver> OpenGdsDriverUncached(std::string* why_not) {
  if (gds_internal::DisabledByEnv()) {
    SetReason(why_not, DisabledReason());
    return nullptr;
  }
  std::unique_ptr<CufileApi> api = LocateCufile(why_not);
  if (api == nullptr) return nullptr;
  const CufileStatus st = api->driver_open();
  if (st.err != 0) {
    SetReason(why_not, StrCat("cuFileDriverOpen failed: ", CufileStatusName(st), " (library ",
                              api->library, ", cuFile ", api->version / 1000, ".",
                              api->version % 1000 / 10, ")"));
    return nullptr;  // the library stays loaded: cuFile may have started threads
  }
  return std::unique_ptr<GdsDriver>(new GdsDriver(std::move(api)));
}

GdsDriver* GdsDriver::Get(std::string* why_not) {
  if (gds_internal::DisabledByEnv()) {
    SetReason(why_not, DisabledReason());
    return nullptr;
  }
  // Built on the first call; destroyed (cuFileDriverClose) at exit. Its construction dlopens
  // libcufile and opens the driver, so its destructor runs before cuFile's own exit handlers.
  struct Cached {
    std::unique_ptr<GdsDriver> driver;
    std::string why_not;
  };
  static Cached cached = [] {
    Cached c;
    c.driver = OpenGdsDriverUncached(&c.why_not);
    return c;
  }();
  if (cached.driver == nullptr) SetReason(why_not, cached.why_not);
  return cached.driver.get();
}

// GdsFile.

GdsFile::GdsFile(const CufileApi& api, std::string path, int fd, bool direct_io, void* handle)
    : api_(api), path_(std::move(path)), fd_(fd), direct_io_(direct_io), handle_(handle) {}

GdsFile::~GdsFile() {
  api_.handle_deregister(handle_);
  ::close(fd_);
}

namespace {

// Opens `path` for reading with O_DIRECT, or without it where the filesystem refuses O_DIRECT
// (EINVAL). -1 with the reason if the file cannot be opened at all.
int OpenForDirectRead(const std::string& path, bool* direct_io, std::string* why_not) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  *direct_io = fd >= 0;
  if (fd < 0 && errno == EINVAL) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) SetReason(why_not, StrCat("cannot open ", path, ": ", Errno(errno)));
  return fd;
}

std::string NoDirectNote(const std::string& path) {
  return StrCat(path, " was opened without O_DIRECT: its filesystem refuses O_DIRECT (tmpfs?), "
                      "so cuFile can only use its compat mode (POSIX reads) for it");
}

// Registers an open descriptor with cuFile. On failure closes it and says why.
bool Register(const CufileApi& api, const std::string& path, int fd, bool direct_io,
              void** handle, std::string* why_not) {
  FileDescr descr{};
  descr.type = kHandleTypeOpaqueFd;
  descr.handle.fd = fd;
  descr.fs_ops = nullptr;
  *handle = nullptr;
  const CufileStatus st = api.handle_register(handle, &descr);
  if (st.err != 0) {
    ::close(fd);
    SetReason(why_not, StrCat("cuFileHandleRegister of ", path, " failed: ", CufileStatusName(st),
                              direct_io ? "" : StrCat(" (", NoDirectNote(path), ")")));
    return false;
  }
  SetReason(why_not, direct_io ? "" : NoDirectNote(path));
  return true;
}

}  // namespace

std::unique_ptr<GdsFile> OpenGdsFileWith(const CufileApi& api, const std::string& path,
                                         std::string* why_not) {
  bool direct_io = false;
  const int fd = OpenForDirectRead(path, &direct_io, why_not);
  if (fd < 0) return nullptr;
  void* handle = nullptr;
  if (!Register(api, path, fd, direct_io, &handle, why_not)) return nullptr;
  return std::unique_ptr<GdsFile>(new GdsFile(api, path, fd, direct_io, handle));
}

std::unique_ptr<GdsFile> GdsFile::Open(const std::string& path, std::string* why_not) {
  // The file first, so that a missing file is reported as such whatever the driver's state.
  bool direct_io = false;
  const int fd = OpenForDirectRead(path, &direct_io, why_not);
  if (fd < 0) return nullptr;
  std::string reason;
  GdsDriver* driver = GdsDriver::Get(&reason);
  if (driver == nullptr) {
    ::close(fd);
    SetReason(why_not, StrCat("no GPUDirect Storage for ", path, ": ", reason));
    return nullptr;
  }
  void* handle = nullptr;
  if (!Register(driver->api(), path, fd, direct_io, &handle, why_not)) return nullptr;
  return std::unique_ptr<GdsFile>(new GdsFile(driver->api(), path, fd, direct_io, handle));
}

void GdsFile::Read(void* device_ptr, size_t n, uint64_t file_offset) {
  size_t done = 0;
  while (done < n) {
    const uint64_t at = file_offset + done;
    errno = 0;
    const ssize_t got = api_.read(handle_, device_ptr, n - done, static_cast<off_t>(at),
                                  static_cast<off_t>(done));
    if (got < 0) {
      const int e = errno;
      if (got == -1 && e == EINTR) continue;
      const std::string what =
          got == -1 ? StrCat("errno ", e, " (", Errno(e), ")")
                    : CufileStatusName(CufileStatus{static_cast<int>(-got), 0});
      throw Error(StrCat("GPUDirect read of ", path_, " at offset ", at, " (", n - done,
                         " of ", n, " bytes from offset ", file_offset, " left) failed: ", what));
    }
    DCPP_CHECK(got > 0, "GPUDirect read of ", path_, ": the file ends at offset ", at, ", before ",
               n - done, " more bytes (", n, " from offset ", file_offset, ")");
    done += static_cast<size_t>(got);
  }
}

}  // namespace dcpp
