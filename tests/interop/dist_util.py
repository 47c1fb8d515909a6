"""Shared by the DCP interop scripts: a tiny launcher of gloo ranks, the seeds' MLP, and the
values dcpp_make writes.

launch(worker, world, *args) runs `worker(rank, world, *args)` in `world` fresh processes with
a gloo process group (torchrun's environment variables, a FileStore rendezvous in a temporary
folder, so parallel tests never fight over a port). The launching process does not import
torch, which saves ~3 s per run on this 2-core machine. A rank that fails makes launch() kill
the others and raise; so does a run past `timeout` seconds.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

_RANK_ENV = "DCPP_INTEROP_RANK"


def launch(script, world, args, timeout=300):
    """Runs `script args...` as `world` ranks; returns when all exited 0, else exits 1."""
    store = tempfile.mkdtemp(prefix="interop_store_")
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        env.update({_RANK_ENV: str(rank), "WORLD_SIZE": str(world), "DCPP_INTEROP_STORE": store + "/store",
                    "GLOO_SOCKET_IFNAME": env.get("GLOO_SOCKET_IFNAME", "lo"),
                    "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
        procs.append(subprocess.Popen([sys.executable, script] + list(args), env=env))
    deadline = time.time() + timeout
    failed = None
    while any(p.poll() is None for p in procs):
        bad = [r for r, p in enumerate(procs) if p.poll() not in (None, 0)]
        if bad or time.time() > deadline:
            failed = f"rank {bad[0]} exited {procs[bad[0]].returncode}" if bad else f"timeout after {timeout}s"
            time.sleep(2)  # let the other ranks print their own error first
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.05)
    for r, p in enumerate(procs):
        p.wait()
        if p.returncode != 0 and failed is None:
            failed = f"rank {r} exited {p.returncode}"
    shutil.rmtree(store, ignore_errors=True)
    if failed:
        print(f"FAIL {os.path.basename(script)} {' '.join(args[:1])}: {failed}", flush=True)
        sys.exit(1)


def is_rank():
    return _RANK_ENV in os.environ


def main(script, world, worker):
    """The entry point of a multi-rank script: launches the ranks, or is one of them."""
    if not is_rank():
        launch(script, world, sys.argv[1:])
        return
    import torch.distributed as dist

    rank, world = int(os.environ[_RANK_ENV]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method="file://" + os.environ["DCPP_INTEROP_STORE"],
                            rank=rank, world_size=world)
    try:
        worker(rank, world, *sys.argv[1:])
        dist.barrier()  # no rank tears down while another is still in a collective
    finally:
        dist.destroy_process_group()


def mlp(d_in, hidden, d_out, seed):
    """The seeds' MLPModule shape: net1 = Linear(d_in, hidden), ReLU, net2 = Linear(hidden, d_out)."""
    import torch

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net1 = torch.nn.Linear(d_in, hidden)
            self.relu = torch.nn.ReLU()
            self.net2 = torch.nn.Linear(hidden, d_out)

        def forward(self, x):
            return self.net2(self.relu(self.net1(x)))

    torch.manual_seed(seed)
    return MLP()


# What dcpp_make writes (keep in step with tests/interop/dcpp_make.cc): key, dtype, shape.
MAKE_KEYS = [
    ("net1.weight", "float32", [16, 8]),
    ("net1.bias", "float32", [16]),
    ("net2.weight", "float32", [8, 16]),
    ("net2.bias", "float32", [8]),
    ("extra.bf16", "bfloat16", [7, 5]),
]
MAKE_OBJ = [1, "a"]
MAKE_RAW = b"dcpp raw \x00\x01\x02\xff"


def expected(key):
    """dcpp_make's values for `key`: float64(((i * 37 + k * 101) % 1000) / 1000 - 0.5), cast."""
    import torch

    k = [name for name, _, _ in MAKE_KEYS].index(key)
    _, dtype, shape = MAKE_KEYS[k]
    n = 1
    for s in shape:
        n *= s
    v = (torch.arange(n, dtype=torch.int64) * 37 + k * 101) % 1000
    v = v.to(torch.float64) / 1000 - 0.5
    return v.reshape(shape).to(getattr(torch, dtype))


def write_references(rank, sd, ref):
    """What `sd` holds, for compare_dump.py: REF/<fqn>.pt each tensor whole, REF/<fqn>.obj each
    other value (torch.save), FQNs flattened as DCP does. Every rank takes part (full_tensor()
    is a collective); rank 0 writes."""
    import torch
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict
    from torch.distributed.tensor import DTensor

    flat, _ = flatten_state_dict(sd)
    os.makedirs(ref, exist_ok=True)
    for fqn, v in flat.items():
        if isinstance(v, DTensor):
            v = v.full_tensor()
        if rank != 0:
            continue
        if isinstance(v, torch.Tensor):
            torch.save(v.detach().clone(), os.path.join(ref, fqn + ".pt"))  # whole, contiguous
        else:
            torch.save(v, os.path.join(ref, fqn + ".obj"))
