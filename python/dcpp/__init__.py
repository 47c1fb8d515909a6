"""dcpp for Python trainers: a drop-in for torch.distributed.checkpoint's save and load that
runs dcpp's C++ engine (threads, checksums, atomic commits, Lua planners, resharding on load).

    import dcpp
    dcpp.save(model.state_dict(), checkpoint_id="/ckpt/step-100")   # was dcp.save(...)
    dcpp.load(sd, checkpoint_id="/ckpt/step-100")                    # in place, any layout

dcpp.dcp holds a StorageWriter and StorageReader that put the engine under dcp.save/dcp.load.
Every failure is a dcpp.Error (a RuntimeError) naming the key, file, rank or planner line.
"""

import torch  # noqa: F401  (loads libtorch and torch's pybind11 types before the extension)

from dcpp._C import Error
from dcpp._api import AsyncSaveFuture, async_save, convert, inspect, load, save, verify
from dcpp import dcp  # dcpp.dcp.FileSystemWriter / FileSystemReader, for dcp.save / dcp.load

__all__ = ["Error", "AsyncSaveFuture", "save", "load", "async_save", "inspect", "verify",
           "convert"]
