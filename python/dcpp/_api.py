"""dcpp's Python API: save, load and async_save of state dicts through the C++ engine, and the
offline tools (inspect, verify, convert). Names and arguments follow
torch.distributed.checkpoint where it has them."""

import json
import os

import torch

from dcpp import _C, _flat
from dcpp._C import Error


def _path(checkpoint_id):
    if checkpoint_id is None:
        raise Error("checkpoint_id is required (the checkpoint folder)")
    return os.fspath(checkpoint_id)


def _group(process_group):
    """(the process group to run on or None, the device its collectives use)."""
    import torch.distributed as dist

    if process_group is None:
        if not (dist.is_available() and dist.is_initialized()):
            return None, "cpu"
        process_group = dist.group.WORLD
    backend = str(dist.get_backend(process_group))
    if "gloo" not in backend and "nccl" in backend:
        return process_group, f"cuda:{torch.cuda.current_device()}"
    return process_group, "cpu"


def _options(planner, planner_options):
    script = os.fspath(planner) if planner is not None else ""
    opts = {str(k): str(v) for k, v in (planner_options or {}).items()}
    return script, opts


def save(state_dict, checkpoint_id, *, process_group=None, thread_count=1, planner=None,
         planner_options=None, format="native"):
    """Saves `state_dict` into the folder `checkpoint_id`, collectively over `process_group`
    (default: the default group when torch.distributed is initialized, else this process
    alone). Values: tensors, DTensors, nested dicts and lists, and picklable objects.
    `planner` is the path of a Lua save planner; `format` "native" (dcpp's) or "dcp" (what
    torch.distributed.checkpoint.load reads). Returns the engine's statistics."""
    tensors, blobs, _, _ = _flat.split(state_dict)
    group, device = _group(process_group)
    script, opts = _options(planner, planner_options)
    return _C.save(_path(checkpoint_id), tensors, blobs, group, device, int(thread_count), script,
                   opts, format)


def load(state_dict, checkpoint_id, *, process_group=None, allow_partial_load=False,
         thread_count=1, planner=None, planner_options=None):
    """Loads the checkpoint in `checkpoint_id` (dcpp's native format or PyTorch DCP's, in any
    layout or world size) into `state_dict` in place: tensors and DTensors are written into,
    meta-device ones are allocated and replaced, objects are replaced by the stored ones."""
    tensors, keys, mapping, flat = _flat.split(state_dict, for_load=True)
    group, device = _group(process_group)
    script, opts = _options(planner, planner_options)
    loaded = _C.load(_path(checkpoint_id), tensors, keys, group, device, int(thread_count), script,
                     opts, bool(allow_partial_load))
    _flat.put_back(state_dict, mapping, flat, loaded, allow_partial_load)
    return loaded["stats"]


class AsyncSaveFuture:
    """The result of async_save: `result()` blocks until the checkpoint is committed and
    returns the save's statistics, or raises its dcpp.Error; `done()` does not block."""

    def __init__(self, pending):
        self._pending = pending

    def result(self, timeout=None):
        if timeout is not None:
            raise Error("AsyncSaveFuture.result: timeouts are not supported")
        return self._pending.result()

    def done(self):
        return self._pending.done()


_saver = None


def async_save(state_dict, checkpoint_id, *, process_group=None, thread_count=1, planner=None,
               planner_options=None, format="native"):
    """Like save(), but returns once every tensor is copied to host memory; the write and
    commit run in the background. Later changes to the tensors do not reach the checkpoint.
    Saves never interleave: a second async_save waits for the one in flight. With several
    ranks, pass a process group the trainer does not use until result() returns."""
    global _saver
    if _saver is None:
        _saver = _C.AsyncSaver()
    tensors, blobs, _, _ = _flat.split(state_dict)
    group, device = _group(process_group)
    script, opts = _options(planner, planner_options)
    return AsyncSaveFuture(_C.async_save(_saver, _path(checkpoint_id), tensors, blobs, group,
                                         device, int(thread_count), script, opts, format))


def inspect(path):
    """The checkpoint's metadata as a dict, the shape `inspect --json` prints (README,
    "Inspect and verify"); works for dcpp, PyTorch DCP and safetensors checkpoints."""
    return json.loads(_C.inspect_json(os.fspath(path)))


def verify(path, *, thread_count=2):
    """Re-reads every chunk and blob and checks it against the metadata. Returns the report
    ({"ok", "problems": [{"key", "file", "message"}], ...}); never raises for a problem of the
    checkpoint, only when there is no checkpoint at `path`."""
    return _C.verify(os.fspath(path), int(thread_count))


def convert(src, dst, *, planner="planners/fsdp_to_tp.lua", world_size=2, options=None,
            format="native", overwrite=False, memory_budget=1 << 30, dtype=None):
    """Converts the checkpoint in `src` into another layout in `dst`, offline, in bounded
    memory (core/tools/convert.h): `planner` is a conversion planner (a path or the name of an
    embedded one), `options` its options; `dtype` casts on the way out, as convert's --dtype
    ("bf16", or a list such as ["bf16", "*norm*=fp32"]). Returns what moved where."""
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    casts = [dtype] if isinstance(dtype, str) else [str(r) for r in (dtype or [])]
    return _C.convert(os.fspath(src), os.fspath(dst), os.fspath(planner), int(world_size), opts,
                      format, bool(overwrite), int(memory_budget), casts)
