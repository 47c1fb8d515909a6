"""Python's side of safetensors_interop_test.sh, with the real `safetensors` and `torch`.

  safetensors_check.py check-export DIR      DIR (written by export_safetensors from
                                             make_sharded's checkpoint) loads with
                                             safetensors.torch.load_file, shard by shard, and
                                             holds exactly the values make_sharded saved
  safetensors_check.py check-cast DIR DTYPE [KEY=DTYPE ...]
                                             as check-export, but every floating-point tensor
                                             is expected as `t.to(DTYPE)` (torch dtype names),
                                             except the KEYs named, expected in their DTYPE
  safetensors_check.py write DIR EXPECTED    writes an HF-style sharded checkpoint (two
                                             save_file shards + a hand-written index, bf16
                                             included) into DIR and its tensors to EXPECTED
  safetensors_check.py compare DIR EXPECTED  DIR's shards hold the tensors in EXPECTED

Exits non-zero with a message naming the key on any difference.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

INDEX = "model.safetensors.index.json"

# Keep in step with Keys() in make_sharded.cc: dtype, shape, scale, shift.
KEYS = {
    "model.embed.weight": (torch.float32, [64, 16], 0.5, -100),
    "model.layers.0.attn.wq": (torch.bfloat16, [32, 24], 0.01, 0),
    "model.layers.0.mlp.w1": (torch.float16, [40, 8], 0.125, -3),
    "model.norm.weight": (torch.float64, [16], 1.0 / 3, 1),
    "model.ids": (torch.int64, [7, 3], 1000003, -5),
    "model.bytes": (torch.uint8, [100], 1, 0),
    "model.step": (torch.int32, [], 1, 42),
}


def made_by_make_sharded():
    out = {}
    for key, (dtype, shape, scale, shift) in KEYS.items():
        n = 1
        for s in shape:
            n *= s
        out[key] = torch.arange(n, dtype=torch.float64).reshape(shape).mul(scale).add(shift).to(dtype)
    out["model.mask"] = torch.arange(10, dtype=torch.int64).remainder(3).eq(0)
    return out


def load_sharded(d):
    """Every tensor of d's shards, checking the index against what each shard holds."""
    with open(os.path.join(d, INDEX)) as f:
        index = json.load(f)
    weight_map = index["weight_map"]
    files = sorted(set(weight_map.values()))
    got = {}
    for name in files:
        path = os.path.join(d, name)
        part = load_file(path)
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
        assert meta.get("format") == "pt", f"{name}: __metadata__ {meta}"
        for key in part:
            assert weight_map.get(key) == name, f"{key} is in {name}, the index says {weight_map.get(key)}"
            assert key not in got, f"{key} is in two shards"
        got.update(part)
    assert set(got) == set(weight_map), f"index lists {sorted(set(weight_map) - set(got))} that no shard holds"
    total = sum(t.numel() * t.element_size() for t in got.values())
    assert index["metadata"]["total_size"] == total, f"total_size {index['metadata']['total_size']} != {total}"
    return got, files


def compare(got, want):
    assert sorted(got) == sorted(want), f"keys {sorted(got)} != {sorted(want)}"
    for key, w in want.items():
        g = got[key]
        assert g.dtype == w.dtype, f"{key}: dtype {g.dtype} != {w.dtype}"
        assert g.shape == w.shape, f"{key}: shape {list(g.shape)} != {list(w.shape)}"
        assert torch.equal(g, w), f"{key}: values differ"


def check_export(d):
    got, files = load_sharded(d)
    n = len(files)
    assert files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)], files
    compare(got, made_by_make_sharded())
    print(f"python: {len(got)} tensors in {n} shards match")


def check_cast(d, default, overrides):
    got, files = load_sharded(d)
    want, cast = {}, 0
    for key, t in made_by_make_sharded().items():
        dtype = getattr(torch, overrides.get(key, default)) if t.is_floating_point() else t.dtype
        cast += dtype != t.dtype
        want[key] = t.to(dtype)
    compare(got, want)
    print(f"python: {len(got)} tensors in {len(files)} shards match, {cast} of them cast")


def write(d, expected):
    g = torch.Generator().manual_seed(0)
    t = {
        "net1.weight": torch.randn(16, 10, generator=g).to(torch.bfloat16),
        "net1.bias": torch.randn(16, generator=g),
        "net2.weight": torch.randn(10, 16, generator=g).to(torch.bfloat16),
        "net2.bias": torch.randn(10, generator=g),
        "emb.ids": torch.randint(-(2**40), 2**40, (5, 3), generator=g),
        "scale": torch.tensor(2.5, dtype=torch.float16),
    }
    shards = {
        "model-00001-of-00002.safetensors": ["net1.weight", "net1.bias"],
        "model-00002-of-00002.safetensors": ["net2.weight", "net2.bias", "emb.ids", "scale"],
    }
    os.makedirs(d, exist_ok=True)
    weight_map = {}
    for name, keys in shards.items():
        save_file({k: t[k] for k in keys}, os.path.join(d, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
    total = sum(x.numel() * x.element_size() for x in t.values())
    with open(os.path.join(d, INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    torch.save(t, expected)
    print(f"python: wrote {len(t)} tensors in {len(shards)} shards")


def main():
    cmd = sys.argv[1]
    if cmd == "check-export":
        check_export(sys.argv[2])
    elif cmd == "check-cast":
        check_cast(sys.argv[2], sys.argv[3], dict(a.split("=", 1) for a in sys.argv[4:]))
    elif cmd == "write":
        write(sys.argv[2], sys.argv[3])
    elif cmd == "compare":
        got, files = load_sharded(sys.argv[2])
        compare(got, torch.load(sys.argv[3]))
        print(f"python: {len(got)} tensors in {len(files)} shards match")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
