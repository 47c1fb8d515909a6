"""Every dtype PyTorch's own DCP and safetensors can save, against dcpp, bit for bit.

  python dtypes.py save DIR         dcp.save of one tensor per dtype (DIR/dcp), the same dict
                                    torch.save'd (DIR/ref.pt), safetensors.torch.save_file
                                    of those safetensors writes (DIR/st/model.safetensors), and
                                    the bits* dtypes (DIR/bits, DIR/bits_ref.pt)
  python dtypes.py check DUMP REF   dcpp_dump's DUMP/<key>.pt agree with REF.pt (or a
                                    safetensors file) in dtype, shape and every byte
  python dtypes.py load DCP REF     dcp.load of DCP (written by dcpp) gives REF.pt's bytes
  python dtypes.py header A B       two safetensors files hold the same dtype names, shapes and
                                    bytes for every tensor

The dtype list is not written down here: `save` asks torch which dtypes dcp.save accepts, so a
dtype a later torch adds shows up in the test. Values are random bytes (bools 0/1).
"""

import json
import os
import struct
import sys
import tempfile
import warnings

import torch
import torch.distributed.checkpoint as dcp

warnings.filterwarnings("ignore")


def all_dtypes():
    return sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str)


def dcp_saves(dtype):
    """True if PyTorch's own dcp.save writes and dcp.load reads a tensor of `dtype`."""
    try:
        t = torch.zeros(4, dtype=torch.uint8).view(dtype) if dtype.itemsize == 1 else \
            torch.zeros(4 * dtype.itemsize, dtype=torch.uint8).view(dtype)
        with tempfile.TemporaryDirectory() as d:
            dcp.save({"t": t}, checkpoint_id=d, no_dist=True)
            dcp.load({"t": torch.empty_like(t)}, checkpoint_id=d, no_dist=True)
        return True
    except BaseException:  # CheckpointException is not an Exception
        return False


def random_tensor(dtype, shape, g):
    n = 1
    for s in shape:
        n *= s
    raw = torch.randint(0, 256, (n * dtype.itemsize,), dtype=torch.uint8, generator=g)
    if dtype == torch.bool:
        raw &= 1
    return raw.view(dtype).reshape(shape)


def as_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def save(out):
    g = torch.Generator().manual_seed(11)
    dtypes = [d for d in all_dtypes() if dcp_saves(d)]
    names = [str(d).replace("torch.", "") for d in dtypes]
    for must in ("float8_e8m0fnu", "float4_e2m1fn_x2"):
        assert must in names, f"torch {torch.__version__} no longer saves {must}: {names}"
    sd = {f"t.{n}": random_tensor(d, (6, 4), g) for n, d in zip(names, dtypes)}
    sd["scale.0d"] = random_tensor(torch.float8_e8m0fnu, (), g)
    sd["qdata.transposed"] = random_tensor(torch.float4_e2m1fn_x2, (3, 8), g).t()
    dcp.save(sd, checkpoint_id=os.path.join(out, "dcp"), no_dist=True)
    torch.save(sd, os.path.join(out, "ref.pt"))

    # The bits containers: torch.save writes them, dcp.save cannot size them (its
    # _element_size asks iinfo). Given their item size, the rest of dcp.save is PyTorch's own.
    bits = {f"b.{n}": random_tensor(getattr(torch, n), (5, 4), g)
            for n in ("bits1x8", "bits2x4", "bits4x2", "bits8", "bits16")}
    element_size = torch._utils._element_size
    torch._utils._element_size = lambda dtype: dtype.itemsize
    try:
        dcp.save(bits, checkpoint_id=os.path.join(out, "bits"), no_dist=True)
    finally:
        torch._utils._element_size = element_size
    torch.save(bits, os.path.join(out, "bits_ref.pt"))

    from safetensors.torch import save as st_save, save_file
    st, refused = {}, []
    for k, v in sd.items():
        try:
            st_save({"x": v.contiguous()})
            st[k] = v.contiguous()
        except Exception:
            refused.append(k)
    os.makedirs(os.path.join(out, "st"))
    save_file(st, os.path.join(out, "st", "model.safetensors"))
    print(f"saved {len(sd)} tensors of {len(dtypes)} dtypes: {' '.join(names)}; "
          f"safetensors took {len(st)}, not {' '.join(refused)}")


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}


def check(dump, ref):
    problems = []
    if ref.endswith(".safetensors"):
        want = read_safetensors(ref)
    else:
        want = torch.load(ref)
    for key, w in want.items():
        path = os.path.join(dump, key + ".pt")
        if not os.path.exists(path):
            problems.append(f"{key}: dcpp dumped nothing")
            continue
        got = torch.load(path)
        if isinstance(w, tuple):  # safetensors: compare bytes only (dtypes differ in naming)
            if as_bytes(got) != w[2]:
                problems.append(f"{key}: bytes differ")
            continue
        if got.dtype != w.dtype or got.shape != w.shape:
            problems.append(f"{key}: {got.dtype} {list(got.shape)}, want {w.dtype} {list(w.shape)}")
        elif as_bytes(got) != as_bytes(w):
            problems.append(f"{key}: bytes differ")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{dump}: compared {len(want)} tensors: bit-exact")


def load(ckpt, ref):
    want = torch.load(ref)
    got = {k: torch.zeros(v.numel() * v.element_size(), dtype=torch.uint8).view(v.dtype).reshape(v.shape)
           for k, v in want.items()}
    dcp.load(got, checkpoint_id=ckpt, no_dist=True)
    bad = [k for k in want if got[k].dtype != want[k].dtype or as_bytes(got[k]) != as_bytes(want[k])]
    if bad:
        print("dcp.load got other bytes for", bad)
        sys.exit(1)
    print(f"dcp.load read {len(want)} tensors bit-exact: {' '.join(sorted({str(v.dtype)[6:] for v in want.values()}))}")


def header(a, b):
    x, y = read_safetensors(a), read_safetensors(b)
    if sorted(x) != sorted(y):
        print("keys differ:", sorted(set(x) ^ set(y)))
        sys.exit(1)
    bad = [f"{k}: {x[k][:2]} vs {y[k][:2]}" for k in x if x[k] != y[k]]
    if bad:
        print("\n".join(bad))
        sys.exit(1)
    print(f"same {len(x)} tensors: {' '.join(sorted({v[0] for v in x.values()}))}")


if __name__ == "__main__":
    {"save": save, "check": check, "load": load, "header": header}[sys.argv[1]](*sys.argv[2:])
