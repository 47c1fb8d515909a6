"""From a trainer's nested state dict to the flat entries the engine (dcpp._C) takes, and back.

Nesting follows torch.distributed.checkpoint exactly (its own flatten_state_dict is used): dicts
always nest, lists nest only when they hold tensors or containers that do, keys are the path
joined by '.', and everything else (ints, floats, strings, None, tuples, lists of plain
values, other objects) is a leaf stored as a bytes entry. So a checkpoint dcpp writes in DCP's
format has the keys dcp.save would give it, and the other way round.

Bytes entries hold torch.save archives, as DCP stores objects; they are read back with
torch.load(weights_only=True), which refuses to import or call anything outside PyTorch's safe
list (torch.serialization.add_safe_globals extends it). A blob that is not a torch.save archive
(written from C++ with AddBytes) comes back as a Python bytes object.
"""

import io

import torch
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint._traverse import set_element

from dcpp._C import Error

try:
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
except ImportError:  # a torch without distributed support
    DTensor = None


def _is_dtensor(value):
    return DTensor is not None and isinstance(value, DTensor)


def flatten(state_dict):
    """(flat {fqn: value}, {fqn: path in the nested dict}); raises Error on a key clash."""
    if not isinstance(state_dict, dict):
        raise Error(f"state_dict must be a dict, not {type(state_dict).__name__}")
    try:
        return flatten_state_dict(state_dict)
    except ValueError as e:
        raise Error(f"state_dict: {e}") from None


def _dtensor_chunk(fqn, dt):
    """The local shard of a DTensor and its box, as DTensor computes it (Shard, Replicate and
    _StridedShard over any mesh)."""
    local = dt._local_tensor
    shape, offset = compute_local_shape_and_global_offset(dt.shape, dt.device_mesh, dt.placements)
    if tuple(local.shape) != tuple(shape):
        raise Error(f"key '{fqn}': DTensor's local tensor has shape {tuple(local.shape)}, but its "
                    f"placements {dt.placements} give this rank {tuple(shape)}")
    return list(offset), local


def tensor_entry(fqn, value):
    """(fqn, global shape, [(offsets, local tensor)]) for a tensor or DTensor."""
    if _is_dtensor(value):
        if value.device_mesh.get_coordinate() is None:
            return None  # this rank is not in the mesh: it holds nothing of it
        return (fqn, list(value.shape), [_dtensor_chunk(fqn, value)])
    return (fqn, list(value.shape), [([0] * value.dim(), value)])


def to_bytes(fqn, value):
    buf = io.BytesIO()
    try:
        torch.save(value, buf)
    except Exception as e:  # an object that does not pickle
        raise Error(f"key '{fqn}': cannot store {type(value).__name__} as bytes: {e}") from None
    return buf.getvalue()


def from_bytes(fqn, data):
    if not data.startswith(b"PK"):
        return data  # a raw blob, not a torch.save archive
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:
        raise Error(f"key '{fqn}': the safe loader (torch.load weights_only=True) refused the "
                    f"stored object: {str(e).splitlines()[0]}") from None


def split(state_dict, for_load=False):
    """The engine's arguments for `state_dict`: (tensors, blobs or blob keys, mapping, flat)."""
    flat, mapping = flatten(state_dict)
    tensors, blobs = [], []
    for fqn, value in flat.items():
        if isinstance(value, torch.Tensor):
            entry = tensor_entry(fqn, value)
            if entry is not None:
                tensors.append(entry)
        elif for_load:
            blobs.append(fqn)
        else:
            blobs.append((fqn, to_bytes(fqn, value)))
    return tensors, blobs, mapping, flat


def put_back(state_dict, mapping, flat, loaded, allow_partial_load=False):
    """Puts what load() returned into the caller's nested dict: objects from bytes entries,
    and tensors the engine allocated for meta-device targets. Under allow_partial_load a blob
    the checkpoint lacks comes back empty (a torch.save archive never is) and is left alone."""
    for fqn, data in loaded["bytes"].items():
        if allow_partial_load and not data:
            continue
        set_element(state_dict, mapping[fqn], from_bytes(fqn, data))
    for fqn, chunks in loaded["allocated"].items():
        old = flat[fqn]
        if _is_dtensor(old):
            new = DTensor.from_local(chunks[0], old.device_mesh, old.placements,
                                     run_check=False, shape=old.shape, stride=old.stride())
        else:
            new = chunks[0]
        set_element(state_dict, mapping[fqn], new)
