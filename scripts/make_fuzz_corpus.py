#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in fuzz/, made from real files.

    make_fuzz_corpus.py OUT [DCPP_CHECKPOINT ...]

writes OUT/<target>/<name> for the targets pickle, torch_archive, safetensors, dcp and
metadata: torch.save archives (tensors of several dtypes, a strided one, a 0-d one, dicts and
lists) and the data.pkl inside each; Python pickles of protocols 2 to 5; a single-process
torch.distributed.checkpoint save (its .metadata pickle, and for the dcp target that pickle
followed by its data file); safetensors files; and the .metadata of each dcpp checkpoint
folder given (e.g. from `bazel run //scripts:convert -- --demo --out DIR`), as written (1.1)
and rewritten as format 1.0 (no checksum). The two-part inputs of the dcp and metadata targets
are a 2-byte little-endian length, that many bytes of metadata, then the data file's bytes
(fuzz/memory_reader.h, SplitInput). Nothing is checked in: CI makes the corpora each run.
"""
import collections
import io
import os
import pickle
import struct
import sys
import tempfile
import warnings
import zipfile

import torch

MAX_DATA = 16384  # bytes of a data file kept after the metadata (libFuzzer's -max_len follows)


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def two_part(meta, data):
    if len(meta) > 0xFFFF:
        return None
    return struct.pack("<H", len(meta)) + meta + data[:MAX_DATA]


def torch_objects():
    yield "f32", torch.arange(12, dtype=torch.float32).reshape(3, 4)
    yield "bf16", torch.arange(6, dtype=torch.bfloat16)
    yield "i64_0d", torch.tensor(7)
    yield "strided", torch.arange(24, dtype=torch.float64).reshape(4, 6)[:, ::2]
    yield "offset_view", torch.arange(10, dtype=torch.int16)[3:7]
    yield "bool", torch.tensor([True, False, True])
    yield "f8", torch.zeros(4, dtype=torch.float8_e4m3fn)
    yield "dict", collections.OrderedDict(w=torch.ones(2, 2), step=3, name="x", t=(1, 2.5, None))
    yield "list", [1, "two", b"three", {"k": [4.0]}, torch.Size([2, 3])]
    yield "plain", {"epoch": 5, "lr": 1e-3, "flags": [True, False], "blob": bytes(range(16))}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    # torch.save archives, and the pickle inside each.
    for name, obj in torch_objects():
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
        write(out, "torch_archive", name, data)
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for entry in z.namelist():
                if entry.endswith("data.pkl"):
                    write(out, "pickle", "torch_" + name, z.read(entry))
    values = [None, True, 1, -(2**70), 1.5, "text", b"bytes", bytearray(b"ba"), (1, (2,)), [1, [2]],
              {"a": {1: 2}}, {1, 2}, frozenset([3]), collections.OrderedDict(a=1)]
    for proto in range(2, 6):
        write(out, "pickle", "values_p%d" % proto, pickle.dumps(values, protocol=proto))

    # PyTorch DCP, single process (no process group).
    import torch.distributed.checkpoint as dcp
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = {"w": torch.arange(8, dtype=torch.float32).reshape(2, 4), "b": torch.ones(3, dtype=torch.bfloat16),
              "step": torch.tensor(5), "nested": {"x": torch.zeros(2, 2, dtype=torch.float64)}, "extra": {"epoch": 2}}
        dcp.save(sd, checkpoint_id=d)
        meta = open(os.path.join(d, ".metadata"), "rb").read()
        write(out, "pickle", "dcp_metadata", meta)
        write(out, "dcp", "metadata_only", two_part(meta, b""))
        for f in sorted(os.listdir(d)):
            if f.endswith(".distcp"):
                data = open(os.path.join(d, f), "rb").read()
                write(out, "dcp", "dcp_" + f, two_part(meta, data))

    # safetensors.
    from safetensors.torch import save as st_save
    write(out, "safetensors", "two", st_save({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                                               "b": torch.ones(2, dtype=torch.float16)},
                                              metadata={"format": "pt"}))
    write(out, "safetensors", "empty_and_0d", st_save({"e": torch.zeros(0, 3), "s": torch.tensor(1.0)}))
    write(out, "safetensors", "int", st_save({"i": torch.arange(4, dtype=torch.int64),
                                               "u": torch.arange(4, dtype=torch.uint8)}))

    # dcpp's own metadata.
    for i, ckpt in enumerate(sys.argv[2:]):
        meta = open(os.path.join(ckpt, ".metadata"), "rb").read()
        files = sorted(f for f in os.listdir(ckpt) if f.endswith(".distcp"))
        data = open(os.path.join(ckpt, files[0]), "rb").read() if files else b""
        write(out, "metadata", "dcpp%d_v11" % i, two_part(meta, data))
        # Format 1.0: format_minor (field 2, right after format_major = 1) dropped, no trailer.
        if meta.startswith(b"\x08\x01\x10\x01") and meta[-9] == 0x79:
            v10 = b"\x08\x01" + meta[4:-9]
            write(out, "metadata", "dcpp%d_v10" % i, two_part(v10, data))
    for target in ("pickle", "torch_archive", "safetensors", "dcp", "metadata"):
        d = os.path.join(out, target)
        n = len(os.listdir(d)) if os.path.isdir(d) else 0
        print("corpus %-14s %d inputs" % (target, n))


if __name__ == "__main__":
    main()
