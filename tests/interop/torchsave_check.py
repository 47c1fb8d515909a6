"""torch.save checkpoints written by the real torch, for torchsave_interop_test.sh.

  python torchsave_check.py write DIR   writes, from one tiny Llama-shaped model (bf16 weights,
      fp32 norms, rope.freqs), with whole-tensor references for compare_dump.py:
        DIR/hf/pytorch_model.bin        the state dict in one file, plus a tied weight (the
                                        same tensor twice), a transposed view and a row slice
                                        of one storage; references in DIR/ref_hf
        DIR/hfs/pytorch_model-0000K-of-00003.bin + pytorch_model.bin.index.json
        DIR/meta/consolidated.00..07.pth + params.json   Meta's 8-way model-parallel slices
                                        (Llama 2: tok_embeddings split on dim 1)
        DIR/meta3/consolidated.00..01.pth + params.json  2-way, Llama 3 (vocab-split
                                        embeddings); references of both in DIR/ref_llama
        DIR/train/ckpt.pt  a training checkpoint: {"model": ..., "optim": AdamW's state_dict()
                         after one step, "epoch": 3, "bufs": [t, t], "raw": bytes, "tags": a set}; references (tensors
                         .pt, other values .obj, keys flattened as dcp.save) in DIR/ref_train
        DIR/evil.bin     a pickle that calls os.system (must be refused, never run)
        DIR/legacy.pt    torch.save's legacy (non-zip) format
        DIR/cut.bin      pytorch_model.bin cut in half
        DIR/flip/pytorch_model.bin   one bit of one storage flipped
  python torchsave_check.py load-tp CKPT REF   on 2 gloo ranks: dcp.load of a DCP checkpoint
      (convert --format dcp of DIR/meta) into DTensors placed as Llama TP over 2 ranks
      (column-wise Shard(0), row-wise Shard(1), the rest replicated), every local shard and
      full tensor compared with REF; also checks that the checkpoint itself stores the split
      weights as 2 chunks. Prints "loaded CKPT as TP: N tensors ok".
  python torchsave_check.py check-st FILE REF   safetensors' load_file of FILE equals REF.
"""

import json
import os
import sys

import dist_util

DIM, LAYERS, HEADS, VOCAB, HIDDEN = 16, 2, 4, 32, 48
COLWISE = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3", "output")
ROWWISE = ("attention.wo", "feed_forward.w2")


def llama_state_dict():
    import torch

    g = torch.Generator().manual_seed(7)

    def w(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, generator=g).to(dtype)

    sd = {"tok_embeddings.weight": w(VOCAB, DIM)}
    for i in range(LAYERS):
        p = f"layers.{i}."
        for n in ("wq", "wk", "wv", "wo"):
            sd[p + f"attention.{n}.weight"] = w(DIM, DIM)
        sd[p + "feed_forward.w1.weight"] = w(HIDDEN, DIM)
        sd[p + "feed_forward.w2.weight"] = w(DIM, HIDDEN)
        sd[p + "feed_forward.w3.weight"] = w(HIDDEN, DIM)
        sd[p + "attention_norm.weight"] = w(DIM, dtype=torch.float32)
        sd[p + "ffn_norm.weight"] = w(DIM, dtype=torch.float32)
    sd["norm.weight"] = w(DIM, dtype=torch.float32)
    sd["output.weight"] = w(VOCAB, DIM)
    sd["rope.freqs"] = w(DIM // HEADS // 2, dtype=torch.float32)
    return sd


def split_dim(key, llama3):
    if key == "tok_embeddings.weight":
        return 0 if llama3 else 1
    if any(key.endswith(c + ".weight") for c in COLWISE):
        return 0
    if any(key.endswith(r + ".weight") for r in ROWWISE):
        return 1
    return None


def write_refs(sd, ref):
    import torch

    os.makedirs(ref, exist_ok=True)
    for k, v in sd.items():
        torch.save(v.contiguous().clone(), os.path.join(ref, k + ".pt"))


def write_consolidated(sd, out, ranks, llama3):
    import torch

    os.makedirs(out)
    for r in range(ranks):
        part = {}
        for k, v in sd.items():
            d = split_dim(k, llama3)
            part[k] = v if d is None else torch.chunk(v, ranks, d)[r].clone()  # only the slice
        torch.save(part, os.path.join(out, f"consolidated.{r:02d}.pth"))
    with open(os.path.join(out, "params.json"), "w") as f:
        json.dump({"dim": DIM, "n_layers": LAYERS, "n_heads": HEADS, "vocab_size": -1 if not llama3 else VOCAB,
                   "norm_eps": 1e-5}, f)


def holds_tensor(v):
    import torch

    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, dict):
        return any(holds_tensor(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(holds_tensor(x) for x in v)
    return False


def write_flat_refs(obj, ref, prefix=""):
    """REF/<fqn>.pt per tensor, REF/<fqn>.obj per other value; dicts and lists that hold
    tensors flattened with '.', as dcp.save flattens a state dict."""
    import torch

    os.makedirs(ref, exist_ok=True)
    if isinstance(obj, torch.Tensor):
        torch.save(obj.detach().contiguous().clone(), os.path.join(ref, prefix + ".pt"))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            write_flat_refs(v, ref, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)) and holds_tensor(obj):
        for i, v in enumerate(obj):
            write_flat_refs(v, ref, f"{prefix}.{i}")
    else:
        torch.save(obj, os.path.join(ref, prefix + ".obj"))


def write_training(d):
    import torch

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3,
            "bufs": [torch.arange(3), torch.ones(2, dtype=torch.float16)],
            "raw": b"\x00\xffdcpp", "tags": {"a", "b"}}
    os.makedirs(os.path.join(d, "train"))
    torch.save(ckpt, os.path.join(d, "train", "ckpt.pt"))
    write_flat_refs(ckpt, os.path.join(d, "ref_train"))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo dcpp-ran-os.system > /dev/stderr",))


def write(d):
    import collections
    import shutil
    import zipfile

    import torch

    sd = llama_state_dict()
    write_refs(sd, os.path.join(d, "ref_llama"))

    # Hugging Face, one file: an OrderedDict (as state_dict() is) with views of shared storages.
    hf = collections.OrderedDict(sd)
    hf["lm_head.weight"] = hf["tok_embeddings.weight"]  # tied: the same tensor
    wq = hf["layers.0.attention.wq.weight"]
    hf["views.wq_t"] = wq.t()  # transposed view of wq's storage
    hf["views.wq_rows"] = wq[3:7]  # rows 3..6: an offset into the storage
    hf["views.wq_col"] = wq[:, 5]  # a strided column
    os.makedirs(os.path.join(d, "hf"))
    torch.save(hf, os.path.join(d, "hf", "pytorch_model.bin"))
    write_refs(hf, os.path.join(d, "ref_hf"))

    # Hugging Face shards with an index, as save_pretrained(safe_serialization=False) writes.
    os.makedirs(os.path.join(d, "hfs"))
    keys = list(sd)
    shards = [keys[0::3], keys[1::3], keys[2::3]]
    weight_map = {}
    for i, ks in enumerate(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(collections.OrderedDict((k, sd[k]) for k in ks), os.path.join(d, "hfs", name))
        weight_map.update({k: name for k in ks})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    with open(os.path.join(d, "hfs", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

    write_consolidated(sd, os.path.join(d, "meta"), 8, llama3=False)
    write_consolidated(sd, os.path.join(d, "meta3"), 2, llama3=True)

    write_training(d)
    torch.save({"w": Evil()}, os.path.join(d, "evil.bin"))
    torch.save(sd, os.path.join(d, "legacy.pt"), _use_new_zipfile_serialization=False)
    data = open(os.path.join(d, "hf", "pytorch_model.bin"), "rb").read()
    with open(os.path.join(d, "cut.bin"), "wb") as f:
        f.write(data[: len(data) // 2])
    # One bit of the first storage flipped (the zip keeps its CRC-32).
    os.makedirs(os.path.join(d, "flip"))
    flip = os.path.join(d, "flip", "pytorch_model.bin")
    shutil.copy(os.path.join(d, "hf", "pytorch_model.bin"), flip)
    with zipfile.ZipFile(flip) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    with open(flip, "r+b") as f:
        f.seek(info.header_offset + 26)
        n, m = (int.from_bytes(f.read(2), "little") for _ in range(2))
        at = info.header_offset + 30 + n + m
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ 0x10]))
    print(f"python: wrote {len(sd)} Llama tensors as hf, hfs, meta (8 files), meta3 (2 files)")


def load_tp(rank, world, ckpt, ref):
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    md = dcp.FileSystemReader(ckpt).read_metadata()
    sd, want_all = {}, {}
    for name in sorted(os.listdir(ref)):
        key = name[: -len(".pt")]
        want = torch.load(os.path.join(ref, name), weights_only=True)
        d = split_dim(key, llama3=False)
        if key == "tok_embeddings.weight":
            d = None  # fsdp_to_tp.lua replicates embeddings
        placement = Replicate() if d is None else Shard(d)
        nan = torch.full(want.shape, float("nan"), dtype=want.dtype)
        sd[key] = distribute_tensor(nan, mesh, [placement])
        want_all[key] = (want, d)
        chunks = len(md.state_dict_metadata[key].chunks)
        if chunks != (1 if d is None else world):
            raise AssertionError(f"{ckpt}: {key} is stored as {chunks} chunks, want {1 if d is None else world}")
    dcp.load(sd, checkpoint_id=ckpt)
    for key, (want, d) in want_all.items():
        local = want if d is None else torch.chunk(want, world, d)[rank]
        got = sd[key].to_local()
        if got.dtype != want.dtype or not torch.equal(got, local):
            raise AssertionError(f"{ckpt}: {key} local shard of rank {rank} differs")
        if not torch.equal(sd[key].full_tensor(), want):
            raise AssertionError(f"{ckpt}: {key} full_tensor differs")
    if rank == 0:
        print(f"loaded {ckpt} as TP: {len(want_all)} tensors ok", flush=True)


def check_st(path, ref):
    import torch
    from safetensors.torch import load_file

    got = load_file(path)
    names = sorted(n[: -len(".pt")] for n in os.listdir(ref))
    if sorted(got) != names:
        raise SystemExit(f"FAIL {path}: keys {sorted(got)}, want {names}")
    for k in names:
        want = torch.load(os.path.join(ref, k + ".pt"), weights_only=True)
        if got[k].dtype != want.dtype or not torch.equal(got[k], want):
            raise SystemExit(f"FAIL {path}: {k} differs")
    print(f"python: {len(names)} tensors of {os.path.basename(path)} match")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "write":
        write(sys.argv[2])
    elif cmd == "check-st":
        check_st(sys.argv[2], sys.argv[3])
    elif cmd == "load-tp" or dist_util.is_rank():
        if not dist_util.is_rank():
            sys.argv = [sys.argv[0]] + sys.argv[2:]
        dist_util.main(os.path.abspath(__file__), 2, load_tp)
    else:
        raise SystemExit(__doc__)
