"""dcpp as a storage layer under torch.distributed.checkpoint: DCP's planners decide what each
rank writes and reads; dcpp's C++ engine does the I/O, with its threads, checksums and atomic
commit.

    import torch.distributed.checkpoint as dcp
    import dcpp.dcp
    dcp.save(sd, storage_writer=dcpp.dcp.FileSystemWriter(path))
    dcp.load(sd, storage_reader=dcpp.dcp.FileSystemReader(path))

FileSystemWriter: every rank hands the items DCP's plan gives it to one collective dcpp save (in
DCP's format, over the default process group, or the one given to it: DCP does not tell its
writer which group dcp.save runs on; process_group=None saves alone, as dcp.save(no_dist=True)
needs), which commits the folder atomically; DCP's own
finish() step then has nothing left to write. So the folder is a PyTorch DCP checkpoint that
torch's own FileSystemReader (and dcpp.load) read, holding the keys and chunks DCP planned.
DCP's planner_data is not kept (DCP's default planners do not need it to load).

FileSystemReader: reads a dcpp or PyTorch DCP checkpoint (any layout); read_metadata describes
it to DCP's planner, and read_data loads each rank's ReadItems through the engine straight into
the targets DCP resolves (no collective: each rank reads its own regions).
"""

import io
import os

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadItemType, WriteItemType
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from dcpp import _C, _api
from dcpp._C import Error


_DEFAULT = object()  # FileSystemWriter's process group: the default group, if initialized


def _done(value):
    fut = Future()
    fut.set_result(value)
    return fut


class FileSystemWriter(StorageWriter):
    """A StorageWriter for dcp.save that writes through dcpp (thread_count writer threads per
    rank), collectively over `process_group` (default: the default group when initialized;
    None: this process alone). Give it the group dcp.save runs on."""

    def __init__(self, path, thread_count=1, process_group=_DEFAULT):
        super().__init__()
        self.path = os.fspath(path) if path is not None else None
        self.thread_count = int(thread_count)
        self.process_group = process_group

    def reset(self, checkpoint_id=None):
        if checkpoint_id is not None:
            self.path = os.fspath(checkpoint_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id):
        return isinstance(checkpoint_id, (str, os.PathLike))

    def set_up_storage_writer(self, is_coordinator, *args, **kwargs):
        self.is_coordinator = is_coordinator
        self.group, self.device = (None, "cpu")
        if self.process_group is not None:
            pg = None if self.process_group is _DEFAULT else self.process_group
            self.group, self.device = _api._group(pg)
        rank = kwargs.get("rank")
        if self.group is not None and rank is not None:
            import torch.distributed as dist

            if rank != dist.get_rank(self.group):
                raise Error(f"dcpp.dcp.FileSystemWriter({self.path!r}): dcp.save runs this rank "
                            f"as rank {rank} (no_dist=True?), the process group has it as "
                            f"{dist.get_rank(self.group)}; pass process_group=None to save alone")

    def prepare_local_plan(self, plan):
        return plan

    def prepare_global_plan(self, plans):
        return plans

    def write_data(self, plan, planner):
        tensors, blobs, results = {}, [], []
        for item in plan.items:
            data = planner.resolve_data(item)
            fqn = item.index.fqn
            if item.type == WriteItemType.BYTE_IO:
                raw = data.getvalue() if isinstance(data, io.BytesIO) else bytes(data)
                blobs.append((fqn, raw))  # already a torch.save archive: stored unchanged
                results.append(WriteResult(index=item.index, size_in_bytes=len(raw),
                                           storage_data=None))
                continue
            td = item.tensor_data
            entry = tensors.setdefault(fqn, (fqn, list(td.size), []))
            entry[2].append((list(td.chunk.offsets), data.detach()))
            results.append(WriteResult(index=item.index,
                                       size_in_bytes=data.numel() * data.element_size(),
                                       storage_data=None))
        _C.save(self.path, list(tensors.values()), blobs, self.group, self.device,
                self.thread_count, "", {}, "dcp")
        return _done(results)

    def finish(self, metadata, results):
        pass  # the dcpp save in write_data committed the folder on every rank's behalf

    def storage_meta(self):
        return None


def _dtype(fqn, name):
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise Error(f"key '{fqn}': dtype {name} has no torch equivalent")
    return dtype


class FileSystemReader(StorageReader):
    """A StorageReader for dcp.load that reads dcpp's native format or PyTorch DCP's through
    dcpp (thread_count reader threads per rank)."""

    def __init__(self, path, thread_count=1):
        super().__init__()
        self.path = os.fspath(path) if path is not None else None
        self.thread_count = int(thread_count)

    def reset(self, checkpoint_id=None):
        if checkpoint_id is not None:
            self.path = os.fspath(checkpoint_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id):
        return isinstance(checkpoint_id, (str, os.PathLike))

    def read_metadata(self, *args, **kwargs):
        md = _api.inspect(self.path)
        state = {}
        for t in md["tensors"]:
            chunks = [ChunkStorageMetadata(offsets=torch.Size(c["offsets"]),
                                           sizes=torch.Size(c["sizes"])) for c in t["chunks"]]
            state[t["key"]] = TensorStorageMetadata(
                properties=TensorProperties(dtype=_dtype(t["key"], t["dtype"])),
                size=torch.Size(t["shape"]), chunks=chunks)
        for b in md["bytes"]:
            state[b["key"]] = BytesStorageMetadata()
        return Metadata(state_dict_metadata=state)

    def set_up_storage_reader(self, metadata, is_coordinator, *args, **kwargs):
        self.metadata = metadata

    def prepare_local_plan(self, plan):
        return plan

    def prepare_global_plan(self, plans):
        return plans

    def read_data(self, plan, planner):
        tensors, targets, blob_items = {}, [], []
        for item in plan.items:
            fqn = item.storage_index.fqn
            if item.type == LoadItemType.BYTE_IO:
                blob_items.append(item)
                continue
            target = planner.resolve_tensor(item).detach()
            offsets = [a + b for a, b in zip(item.storage_index.offset, item.storage_offsets)]
            shape = list(self.metadata.state_dict_metadata[fqn].size)
            tensors.setdefault(fqn, (fqn, shape, []))[2].append((offsets, target))
            targets.append((item, target))
        keys = sorted({item.storage_index.fqn for item in blob_items})
        loaded = _C.load(self.path, list(tensors.values()), keys, None, "cpu", self.thread_count,
                         "", {}, False)
        for item, target in targets:
            planner.commit_tensor(item, target)
        for item in blob_items:
            planner.load_bytes(item, io.BytesIO(loaded["bytes"][item.storage_index.fqn]))
        return _done(None)
