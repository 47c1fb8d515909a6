"""The PyTorch side of dcp_zstd_interop_test.sh's later steps.

  python zstd_check.py load DIR REF      dcp.load (one process, the default extension registry)
                                         every key of REF (REF/<fqn>.pt, .obj) from DIR, which
                                         must be zstd-compressed throughout; each value must
                                         equal REF's. Prints "loaded N tensors, M objects: equal".
  python zstd_check.py offsets DIR KEY   moves KEY's DCP_SHARDING_INFO saved_offsets in the
                                         safetensors blob of DIR's first data file by one (the
                                         header keeps its length)
  python zstd_check.py corrupt DIR KEY head|middle
                                         flips a byte of KEY's compressed item in DIR: its first
                                         (the zstd magic number) or its middle one.
"""

import os
import pickle
import sys
import warnings


def load(path, ref):
    import torch
    import torch.distributed.checkpoint as dcp

    warnings.filterwarnings("ignore")
    with open(os.path.join(path, ".metadata"), "rb") as f:
        md = pickle.load(f)
    for index, info in md.storage_data.items():
        assert list(info.transform_descriptors or []) == ["stream.zstd/1"], (index, info)
    want, sd = {}, {}
    for name in sorted(os.listdir(ref)):
        fqn, ext = os.path.splitext(name)
        want[fqn] = torch.load(os.path.join(ref, name), weights_only=False)
        sd[fqn] = torch.zeros_like(want[fqn]) if ext == ".pt" else None
    dcp.load(sd, checkpoint_id=path, no_dist=True)
    tensors = objects = 0
    for fqn, w in want.items():
        if isinstance(w, torch.Tensor):
            assert sd[fqn].dtype == w.dtype and torch.equal(sd[fqn], w), (fqn, sd[fqn], w)
            tensors += 1
        else:
            assert type(sd[fqn]) is type(w) and sd[fqn] == w, (fqn, sd[fqn], w)
            objects += 1
    print(f"loaded {tensors} tensors, {objects} objects: equal")


def corrupt(path, key, where):
    with open(os.path.join(path, ".metadata"), "rb") as f:
        md = pickle.load(f)
    for index, info in md.storage_data.items():
        if index.fqn != key:
            continue
        at = info.offset + (0 if where == "head" else info.length // 2)
        with open(os.path.join(path, info.relative_path), "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x5A]))
        print(f"corrupted {key} in {info.relative_path} at byte {at}")
        return
    sys.exit(f"no item of {key}")


def offsets(path, key):
    import json
    import struct

    with open(os.path.join(path, ".metadata"), "rb") as f:
        md = pickle.load(f)
    info = next(v for k, v in md.storage_data.items() if k.fqn == key)
    with open(os.path.join(path, info.relative_path), "r+b") as f:
        f.seek(info.offset)
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        sharding = json.loads(header["__metadata__"]["DCP_SHARDING_INFO"])
        sharding[key]["saved_offsets"][0] += 1
        header["__metadata__"]["DCP_SHARDING_INFO"] = json.dumps(sharding)
        text = json.dumps(header, separators=(",", ":")).encode()
        assert len(text) <= n, "the new header is longer"
        f.seek(info.offset + 8)
        f.write(text + b" " * (n - len(text)))
    print(f"moved {key}'s saved_offsets in {info.relative_path}")


if __name__ == "__main__":
    if sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "offsets":
        offsets(sys.argv[2], sys.argv[3])
    else:
        corrupt(sys.argv[2], sys.argv[3], sys.argv[4])
