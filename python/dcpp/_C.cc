// dcpp._C: the Python extension module over core/dcpp.h. The pure-Python package beside it
// (python/dcpp/__init__.py) flattens nested state dicts, computes each DTensor's local box and
// pickles objects; this module only sees flat lists of chunks and blobs:
//
//   tensors: [(fqn, global_shape, [(offsets, local_tensor), ...]), ...]
//   blobs:   [(fqn, bytes), ...]
//
// It is built against the pybind11 that ships in the torch wheel and links libtorch_python, so
// torch.Tensor and torch.distributed.ProcessGroup arrive through torch's own type casters.
// Every call that reads or writes storage, or talks to other ranks, runs with the GIL
// released. dcpp::Error becomes dcpp._C.Error, a RuntimeError subclass.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/utils/pybind.h>

#include <pybind11/stl.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/comm/c10d_comm.h"
#include "core/dcpp.h"
#include "core/format/metadata.h"
#include "core/storage/dcp/pickle.h"
#include "core/storage/dcp/torch_archive.h"
#include "core/storage/open.h"

namespace py = pybind11;

namespace dcpp {
namespace {

using ChunkArg = std::pair<std::vector<int64_t>, at::Tensor>;
using TensorArg = std::tuple<std::string, std::vector<int64_t>, std::vector<ChunkArg>>;
using BlobArg = std::pair<std::string, py::bytes>;

// The flat entries as a StateDict whose chunks share storage with the caller's tensors.
StateDict BuildStateDict(const std::vector<TensorArg>& tensors, const std::vector<BlobArg>& blobs) {
  StateDict sd;
  for (const auto& [fqn, shape, chunks] : tensors) {
    DCPP_CHECK(!chunks.empty(), "key '", fqn, "': no local chunk");
    TensorEntry e;
    e.fqn = fqn;
    e.shape = shape;
    e.dtype = chunks.front().second.scalar_type();
    for (const auto& [offsets, t] : chunks) {
      DCPP_CHECK(t.defined(), "key '", fqn, "': undefined tensor");
      DCPP_CHECK(t.scalar_type() == e.dtype, "key '", fqn, "': local chunks of different dtypes");
      e.chunks.push_back({Box{offsets, t.sizes().vec()}, t});
    }
    sd.Add(std::move(e));
  }
  for (const auto& [fqn, data] : blobs) sd.AddBytes(fqn, std::string(data));
  return sd;
}

// The Comm over the trainer's process group, or none for a single process. CPU groups run on
// gloo; `device` is "cuda" (with NCCL) when the group's default backend is NCCL.
std::shared_ptr<C10dComm> MakeComm(const py::object& pg, const std::string& device) {
  if (pg.is_none()) return nullptr;
  auto group = pg.cast<c10::intrusive_ptr<c10d::ProcessGroup>>();
  return std::make_shared<C10dComm>(group, c10::Device(device));
}

Format FormatOf(const std::string& name) {
  const Format f = ParseFormat(name);
  DCPP_CHECK(f == Format::kNative || f == Format::kDcp, "format '", name,
             "' is not a save target (use \"native\" or \"dcp\")");
  return f;
}

SaveOptions MakeSaveOptions(int thread_count, const std::string& planner,
                            const std::map<std::string, std::string>& planner_options,
                            const std::string& format, Comm* comm) {
  SaveOptions so;
  so.thread_count = thread_count;
  so.planner = planner;
  so.planner_options = planner_options;
  so.format = FormatOf(format);
  so.comm = comm;
  so.creator = "dcpp (python)";
  return so;
}

py::dict SaveStatsDict(const SaveStats& st) {
  py::dict d;
  d["items_written"] = st.items_written;
  d["bytes_written"] = st.bytes_written;
  d["files"] = st.files;
  d["warnings"] = st.warnings;
  return d;
}

py::dict Save(const std::string& path, const std::vector<TensorArg>& tensors,
              const std::vector<BlobArg>& blobs, const py::object& pg, const std::string& device,
              int thread_count, const std::string& planner,
              const std::map<std::string, std::string>& planner_options,
              const std::string& format) {
  const StateDict sd = BuildStateDict(tensors, blobs);
  const std::shared_ptr<C10dComm> comm = MakeComm(pg, device);
  const SaveOptions so = MakeSaveOptions(thread_count, planner, planner_options, format, comm.get());
  SaveStats st;
  {
    py::gil_scoped_release release;
    st = save(sd, path, so);
  }
  return SaveStatsDict(st);
}

// Loads into the caller's tensors in place. Returns {"bytes": {fqn: bytes}, "allocated": {fqn:
// [tensor per chunk]}} for the blobs asked for and for entries whose chunks were on the meta
// device (which the engine allocated), plus the stats.
py::dict Load(const std::string& path, const std::vector<TensorArg>& tensors,
              const std::vector<std::string>& blob_keys, const py::object& pg,
              const std::string& device, int thread_count, const std::string& planner,
              const std::map<std::string, std::string>& planner_options,
              bool allow_partial_load) {
  std::vector<BlobArg> blobs;
  for (const std::string& k : blob_keys) blobs.emplace_back(k, py::bytes(""));
  StateDict sd = BuildStateDict(tensors, blobs);
  std::set<std::string> meta;
  for (const TensorEntry& e : sd.tensors()) {
    for (const LocalChunk& c : e.chunks) {
      if (c.tensor.is_meta()) meta.insert(e.fqn);
    }
  }
  const std::shared_ptr<C10dComm> comm = MakeComm(pg, device);
  LoadOptions lo;
  lo.thread_count = thread_count;
  lo.planner = planner;
  lo.planner_options = planner_options;
  lo.allow_partial_load = allow_partial_load;
  lo.comm = comm.get();
  LoadStats st;
  {
    py::gil_scoped_release release;
    st = load(sd, path, lo);
  }
  py::dict out, got, allocated, stats;
  for (const BytesEntry& b : sd.bytes()) got[py::str(b.fqn)] = py::bytes(b.data);
  for (const TensorEntry& e : sd.tensors()) {
    if (!meta.count(e.fqn)) continue;
    py::list chunks;
    for (const LocalChunk& c : e.chunks) chunks.append(c.tensor);
    allocated[py::str(e.fqn)] = chunks;
  }
  stats["bytes_read"] = st.bytes_read;
  stats["bytes_needed"] = st.bytes_needed;
  stats["checksums_verified"] = st.checksums_verified;
  out["bytes"] = got;
  out["allocated"] = allocated;
  out["stats"] = stats;
  return out;
}

// One async save in flight: keeps the Comm alive until the background save ends, and waits
// for it when dropped unwaited (the background thread must not outlive the Comm).
class PendingHandle {
 public:
  PendingHandle(std::shared_ptr<AsyncSaver> saver, std::shared_ptr<C10dComm> comm, PendingSave p)
      : saver_(std::move(saver)), comm_(std::move(comm)), pending_(std::move(p)) {}
  ~PendingHandle() {
    try {
      py::gil_scoped_release release;
      pending_.wait();
    } catch (...) {
      // Dropped without result(): the error has nobody to go to.
    }
  }
  py::dict Result() {
    SaveStats st;
    {
      py::gil_scoped_release release;
      st = pending_.wait();
    }
    return SaveStatsDict(st);
  }
  bool Done() const { return pending_.done(); }

 private:
  std::shared_ptr<AsyncSaver> saver_;
  std::shared_ptr<C10dComm> comm_;
  PendingSave pending_;
};

std::unique_ptr<PendingHandle> AsyncSave(
    const std::shared_ptr<AsyncSaver>& saver, const std::string& path,
    const std::vector<TensorArg>& tensors, const std::vector<BlobArg>& blobs, const py::object& pg,
    const std::string& device, int thread_count, const std::string& planner,
    const std::map<std::string, std::string>& planner_options, const std::string& format) {
  const StateDict sd = BuildStateDict(tensors, blobs);
  std::shared_ptr<C10dComm> comm = MakeComm(pg, device);
  const SaveOptions so = MakeSaveOptions(thread_count, planner, planner_options, format, comm.get());
  PendingSave p;
  {
    py::gil_scoped_release release;
    p = saver->Save(sd, path, so);
  }
  return std::make_unique<PendingHandle>(saver, std::move(comm), std::move(p));
}

// As `inspect --json` does (scripts/inspect.cc): the value of every bytes entry of at most 64 MiB
// that is a torch.save archive ("value": its repr, or "<opaque: ...>"), and a warning for each
// whose pickle names globals outside the safe list.
void AddBlobValues(StorageReader& reader, const proto::Metadata& md, nlohmann::json& j,
                   std::vector<std::string>& warnings) {
  std::map<std::string, std::string> values;
  std::map<std::string, std::unique_ptr<FileSource>> open;
  for (const auto& b : md.bytes()) {
    if (b.length() > (64u << 20)) continue;
    auto& src = open[b.file()];
    if (!src) src = reader.Open(b.file());
    std::string data(b.length(), '\0');
    src->ReadAt(b.offset(), data.data(), data.size());
    if (!torch_archive::IsTorchSaveArchive(data)) continue;
    const std::string what = "bytes key '" + b.fqn() + "' in " + b.file();
    try {
      values[b.fqn()] = pickle::Repr(*torch_archive::DecodeObject(data, b.fqn()), 120);
      continue;
    } catch (const Error& e) {
      values[b.fqn()] = std::string("<opaque: ") + e.what() + ">";
    }
    try {
      std::string names;
      for (const std::string& g : torch_archive::UnsafeGlobals(data, what)) {
        names += (names.empty() ? "" : ", ") + g;
      }
      if (!names.empty()) {
        warnings.push_back(what + ": its pickle names " + names +
                           ", outside the globals a state dict uses; PyTorch's dcp.load would "
                           "import and call it (dcpp never runs it)");
      }
    } catch (const Error& e) {
      warnings.push_back(what + ": its pickle cannot be checked for unsafe globals (" + e.what() +
                         "); PyTorch's dcp.load would run whatever it holds");
    }
  }
  for (auto& b : j["bytes"]) {
    auto it = values.find(b["key"].get<std::string>());
    if (it != values.end()) b["value"] = it->second;
  }
}

std::string Inspect(const std::string& path) {
  py::gil_scoped_release release;
  DCPP_CHECK(std::filesystem::exists(path), "no checkpoint folder ", path);
  const auto reader = OpenReader(path);
  VerifyOwnChecksums(*reader, false);  // a listing; verify() checks the data
  const proto::Metadata md = ParseMetadata(reader->ReadMetadata(), reader->Describe());
  const Format format = DetectFormat(path);
  nlohmann::json j = InspectJson(md, format.name());
  std::vector<std::string> warnings = InspectWarnings(md, format == Format::kNative);
  AddBlobValues(*reader, md, j, warnings);
  if (!warnings.empty()) j["warnings"] = warnings;
  return j.dump();
}

py::dict VerifyPath(const std::string& path, int thread_count) {
  VerifyReport r;
  {
    py::gil_scoped_release release;
    DCPP_CHECK(std::filesystem::exists(path), "no checkpoint folder ", path);
    VerifyOptions vo;
    vo.thread_count = thread_count;
    if (DetectFormat(path) == Format::kNative) {
      r = Verify(path, vo);  // with notes on files the metadata does not name
    } else {
      // PyTorch DCP records no checksums of its own in the metadata: the reader checks the
      // CRC-32 torch.save keeps for every item it reads whole.
      const auto reader = OpenReader(path);
      VerifyOwnChecksums(*reader, true);
      r = Verify(*reader, vo);
    }
  }
  py::list problems;
  for (const VerifyProblem& p : r.problems) {
    py::dict d;
    d["key"] = p.key;
    d["file"] = p.file;
    d["message"] = p.message;
    problems.append(d);
  }
  py::dict d;
  d["ok"] = r.ok();
  d["problems"] = problems;
  d["problem_count"] = r.problem_count();
  d["notes"] = r.notes;
  d["warnings"] = r.warnings;
  d["tensors"] = r.tensors;
  d["bytes_entries"] = r.bytes_entries;
  d["chunks_checked"] = r.chunks_checked;
  d["bytes_read"] = r.bytes_read;
  return d;
}

py::dict ConvertStatsDict(const ConvertStats& st) {
  py::list keys;
  for (const ConvertedKey& k : st.keys) {
    py::dict d;
    d["key"] = k.key;
    d["source"] = k.source;
    d["is_bytes"] = k.is_bytes;
    d["dtype"] = k.dtype;
    d["target_dtype"] = k.target_dtype;
    d["shape"] = k.shape;
    d["source_layout"] = k.source_layout;
    d["target_layout"] = k.target_layout;
    d["bytes"] = k.bytes;
    keys.append(d);
  }
  py::dict d;
  d["keys"] = keys;
  d["dropped"] = st.dropped;
  d["mesh"] = st.mesh;
  d["source_world_size"] = st.source_world_size;
  d["bytes_read"] = st.bytes_read;
  d["bytes_written"] = st.bytes_written;
  d["files"] = st.files;
  d["chunks_verified"] = st.chunks_verified;
  d["warnings"] = st.warnings;
  return d;
}

py::dict Convert(const std::string& src, const std::string& dst, const std::string& planner,
                 int world_size, const std::map<std::string, std::string>& options,
                 const std::string& format, bool overwrite, int64_t memory_budget,
                 const std::vector<std::string>& dtype_casts) {
  ConvertOptions co;
  co.planner = planner;
  co.world_size = world_size;
  co.planner_options = options;
  co.format = FormatOf(format);
  co.overwrite = overwrite;
  co.memory_budget = memory_budget;
  co.dtype_casts = dtype_casts;
  co.creator = "dcpp convert (python)";
  ConvertStats st;
  {
    py::gil_scoped_release release;
    st = convert(src, dst, co);
  }
  return ConvertStatsDict(st);
}

}  // namespace
}  // namespace dcpp

PYBIND11_MODULE(_C, m) {
  using namespace dcpp;
  m.doc() = "dcpp's C++ engine; use the dcpp package, not this module.";
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);
  py::class_<AsyncSaver, std::shared_ptr<AsyncSaver>>(m, "AsyncSaver").def(py::init<>());
  py::class_<PendingHandle>(m, "PendingSave")
      .def("result", &PendingHandle::Result)
      .def("done", &PendingHandle::Done);
  m.def("save", &Save);
  m.def("load", &Load);
  m.def("async_save", &AsyncSave);
  m.def("inspect_json", &Inspect);
  m.def("verify", &VerifyPath);
  m.def("convert", &Convert);
}
