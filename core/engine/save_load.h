// save() and load() of sharded state dicts, the heart of dcpp's public API (users include
// core/dcpp.h, which includes this), mirroring torch.distributed.checkpoint (save, load,
// FileSystemWriter/Reader, planners, thread_count, allow_partial_load).
//
//   dcpp::StateDict sd;
//   sd.AddSharded("net1.weight", w, dcpp::Layout::Sharded(world, 0), rank);
//   dcpp::save(sd, dcpp::FileSystemWriter("/ckpt"));
//   dcpp::load(sd, dcpp::FileSystemReader("/ckpt"));   // in place, any layout
//
// The folder may also hold PyTorch DCP's own format (DcpWriter/DcpReader, core/storage/dcp/dcp.h)
// or safetensors files: load(sd, dir) detects which; save(sd, dir, options) with
// options.format = Format::kDcp writes DCP's format, which torch.distributed.checkpoint.load
// reads.
//
// save() and load() are collective when `comm` is set: every rank calls them with its own
// state dict. Errors are dcpp::Error, raised on every rank when any rank fails; a failed save
// leaves the previously committed checkpoint in the folder loadable.
//
// The caller keeps the state dict's tensors alive during the call. load() writes into the
// caller's tensors in place and allocates chunks whose tensor is undefined or on the meta
// device (the StateDict then holds the new tensors).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>

#include "core/base/error.h"
#include "core/comm/comm.h"
#include "core/model/layout.h"
#include "core/model/state_dict.h"
#include "core/planner/limits.h"
#include "core/storage/native/filesystem.h"
#include "core/storage/open.h"
#include "core/storage/storage.h"

namespace dcpp {

struct SaveOptions {
  // Writer threads per rank; the default planner also spreads a rank's data over this many
  // files. Default: 1.
  int thread_count = 1;
  // Path of a Lua save planner. Default: "" = the embedded planners/default_save.lua.
  std::string planner;
  // Values the planner sees as ctx.options (e.g. from --set key=value). Default: empty.
  std::map<std::string, std::string> planner_options;
  // Bounds on the planner script (core/planner/limits.h): Lua instructions per call into it
  // and bytes its Lua state may hold; past either, the save fails on every rank with an error
  // naming the script and the limit, before anything is written. 0 = unlimited.
  // Default: 10^10 instructions, 8 GiB.
  int64_t planner_instruction_limit = kDefaultPlannerInstructionLimit;
  int64_t planner_memory_limit = kDefaultPlannerMemoryLimit;
  // The ranks taking part. Default: nullptr = this process alone.
  Comm* comm = nullptr;
  // The staging pool, per writer thread: host memory through which CUDA and non-contiguous
  // chunks reach storage, split into `staging_buffers` buffers (pinned for CUDA chunks). The
  // device-to-host copy of one buffer overlaps the write of the previous ones; host memory
  // stays within the pool whatever the checkpoint size. Default: 64 MiB in 4 buffers.
  int64_t staging_bytes = 64 << 20;
  int staging_buffers = 4;
  // Recorded in the metadata. Default: "dcpp".
  std::string creator = "dcpp";
  // The format save(sd, dir) writes: kNative or kDcp (PyTorch's). Default: kNative.
  Format format = Format::kNative;
  // One writer at a time commits into a folder (a lock file, .dcpp.lock, held by the
  // coordinator from planning to commit). When another save or convert holds it: wait for it
  // (true), or fail at once naming the folder (false). Default: false.
  bool wait_for_lock = false;
  // Save-plan caching (core/engine/plan_cache.h), as PyTorch DCP's enable_plan_caching: when
  // a rank's items (keys, dtypes, shapes, chunk boxes, blob sizes) are exactly those of its
  // previous save under the same planner script, planner options, world size, thread_count
  // and writer kind, it reuses its save_local result and sends a 16-byte hash instead of its
  // plan; when every rank does, the coordinator reuses its global plan, moved to the new data
  // file numbers, instead of running save_global. Any change on any rank falls back to
  // planning (all ranks learn which from the coordinator's answer). On by default: a plan is
  // reused only for byte-identical inputs to a script that has no clock, randomness seeded
  // per save or I/O, and the result is the plan the script returned for them, placed again.
  // A custom save_global that uses ctx.first_file_index other than to number its files (as
  // the embedded planner does) needs false. Default: true.
  bool plan_caching = true;
};

struct LoadOptions {
  // Reader threads per rank. Default: 1.
  int thread_count = 1;
  // Path of a Lua load planner. Default: "" = the embedded planners/default_load.lua.
  std::string planner;
  std::map<std::string, std::string> planner_options;
  // Bounds on the planner script (core/planner/limits.h): Lua instructions per call into it
  // and bytes its Lua state may hold; past either, the load fails on every rank with an error
  // naming the script and the limit, before anything is read. 0 = unlimited.
  // Default: 10^10 instructions, 8 GiB.
  int64_t planner_instruction_limit = kDefaultPlannerInstructionLimit;
  int64_t planner_memory_limit = kDefaultPlannerMemoryLimit;
  Comm* comm = nullptr;
  // Keys of the state dict that the checkpoint lacks are left untouched instead of raising.
  // Default: false.
  bool allow_partial_load = false;
  // Verify the XXH3 checksum of every chunk read whole. Default: true.
  bool verify_checksums = true;
  // PyTorch DCP sources (which record no XXH3): check the CRC-32 that torch.save records for
  // each item read whole (with verify_checksums). Off by default (a CRC-32 pass on the
  // coordinator's reads; convert and verify always check it).
  // Default: false.
  bool verify_dcp_crc32 = false;
  // The staging pool, per reader thread (as SaveOptions): reads into one buffer overlap the
  // host-to-device copies out of the others. Default: 64 MiB in 4 buffers.
  int64_t staging_bytes = 64 << 20;
  int staging_buffers = 4;
  // Read chunks that go whole into a contiguous CUDA target with GPUDirect Storage (cuFile,
  // core/storage/gds/gds.h), storage to GPU memory without host buffers. Only with
  // verify_checksums off (or a format without checksums): the bytes never reach host memory.
  // Where cuFile, its driver or the file's registration is unavailable, the staging ring is
  // used instead (LoadStats::gpudirect_note says why). Default: false.
  bool gpudirect = false;
  // Where chunks that load() allocates live. Default: CPU.
  c10::Device allocate_device = c10::Device(c10::kCPU);
  // Read the data files of a local checkpoint with O_DIRECT, bypassing the page cache, in 4 MiB
  // aligned requests through one 4 MiB buffer per reader thread (core/storage/native/
  // direct_file.h): for cold loads from a disk, where it read ~2x faster than the page cache's
  // readahead on the machine measured (bench/disk.cc), and leaves no copy in the page cache.
  // Where the file system refuses O_DIRECT (tmpfs), the file is read the ordinary way and
  // LoadStats::direct_io_note says so. Default: false.
  bool direct_io = false;
};

struct SaveStats {
  int64_t items_written = 0;  // chunks and blobs this rank wrote
  int64_t bytes_written = 0;
  int64_t files = 0;
  int64_t staged_bytes = 0;        // bytes that went through the staging pool
  int64_t staging_peak_bytes = 0;  // host memory the staging pool held at most (all threads)
  // The plan exchange. plan_cached: the coordinator reused the global plan of an earlier save
  // (SaveOptions::plan_caching; every rank learns it); local_plan_cached: this rank reused its
  // save_local result and sent a hash. plan_bytes_sent: bytes of this rank's local-plan
  // messages; plan_bytes_gathered: on the coordinator, bytes of every rank's (0 elsewhere).
  // plan_seconds: this rank, from building its local plan to holding its placed items
  // (the planners and the gather and scatter included).
  bool plan_cached = false;
  bool local_plan_cached = false;
  int64_t plan_bytes_sent = 0;
  int64_t plan_bytes_gathered = 0;
  double plan_seconds = 0;
  // What went wrong after the commit, which stands (e.g. the folder could not be synced, so
  // the new checkpoint may not survive a power loss): every rank receives the coordinator's.
  std::vector<std::string> warnings;
};

struct LoadStats {
  int64_t bytes_needed = 0;  // bytes the targets receive
  int64_t bytes_read = 0;    // bytes read from storage (more than needed where reads are
                             // coalesced; less where regions come by broadcast)
  int64_t read_calls = 0;
  int64_t checksums_verified = 0;
  int64_t staged_bytes = 0;        // bytes that went through the staging pool
  int64_t staging_peak_bytes = 0;  // host memory the staging pool held at most (all threads)
  int64_t gpudirect_bytes = 0;     // bytes read straight into GPU memory (LoadOptions::gpudirect)
  std::string gpudirect_note;      // why GPUDirect was not used for some chunks, if asked for
  std::string direct_io_note;      // why O_DIRECT was not used for some file, if asked for
  int64_t broadcast_bytes = 0;  // bytes received (or sent, on the root) by broadcast
};

SaveStats save(const StateDict& sd, StorageWriter& writer, const SaveOptions& options = {});
SaveStats save(const StateDict& sd, StorageWriter&& writer, const SaveOptions& options = {});
SaveStats save(const StateDict& sd, const std::string& dir, const SaveOptions& options = {});

LoadStats load(StateDict& sd, StorageReader& reader, const LoadOptions& options = {});
LoadStats load(StateDict& sd, StorageReader&& reader, const LoadOptions& options = {});
LoadStats load(StateDict& sd, const std::string& dir, const LoadOptions& options = {});

}  // namespace dcpp
