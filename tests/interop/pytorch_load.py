"""dcpp -> PyTorch: torch.distributed.checkpoint.load on 2 gloo ranks reads checkpoints that
dcpp wrote in DCP's format (dcpp_make, or //scripts:convert --format dcp) and finds the values
dcpp_make put in (dist_util.expected), into

  (a) a state dict of DTensors Shard(0) over the 2 ranks (every key resharded as FSDP would);
  (b) a parallelize_module TP model (net1 ColwiseParallel, net2 RowwiseParallel) whose
      parameters are loaded in place through model.state_dict(), plus extra.bf16 as a plain
      (whole) tensor on every rank;

and, in both, the bytes entries: extra.obj (the list [1, 'a']) and extra.raw (Python bytes).

  python pytorch_load.py DIR...     prints "loaded DIR: ok" per folder; exits 1 on a mismatch
"""

import os
import sys

import dist_util

WORLD = 2


def check(what, got, want):
    import torch

    if isinstance(want, torch.Tensor):
        ok = isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
    else:
        ok = type(got) is type(want) and got == want
    if not ok:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def load_as_fsdp(rank, path):
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (WORLD,))
    sd = {}
    for key, dtype, shape in dist_util.MAKE_KEYS:
        nan = torch.full(shape, float("nan"), dtype=getattr(torch, dtype))  # stale values show
        sd[key] = distribute_tensor(nan, mesh, [Shard(0)])
    sd["extra.obj"] = None
    sd["extra.raw"] = None
    dcp.load(sd, checkpoint_id=path)
    for key, _, _ in dist_util.MAKE_KEYS:
        want = dist_util.expected(key)
        check(f"{path} (a) {key} local shard of rank {rank}", sd[key].to_local(), torch.chunk(want, WORLD, 0)[rank])
        check(f"{path} (a) {key} full_tensor", sd[key].full_tensor(), want)
    check(f"{path} (a) extra.obj", sd["extra.obj"], dist_util.MAKE_OBJ)
    check(f"{path} (a) extra.raw", sd["extra.raw"], dist_util.MAKE_RAW)


def load_as_tp(rank, path):
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (WORLD,))
    model = parallelize_module(dist_util.mlp(8, 16, 8, seed=1), mesh,
                               {"net1": ColwiseParallel(), "net2": RowwiseParallel()})
    sd = model.state_dict()
    sd["extra.bf16"] = torch.zeros(7, 5, dtype=torch.bfloat16)
    sd["extra.obj"] = None
    sd["extra.raw"] = None
    dcp.load(sd, checkpoint_id=path)
    placements = {"net1.weight": Shard(0), "net1.bias": Shard(0), "net2.weight": Shard(1), "net2.bias": Replicate()}
    params = dict(model.named_parameters())
    for key, want_placement in placements.items():
        p = params[key]  # the model's own parameter: loaded in place
        if p.placements != (want_placement,):
            raise AssertionError(f"{key}: TP placement {p.placements}, want {want_placement}")
        want = dist_util.expected(key)
        local = want if want_placement == Replicate() else torch.chunk(want, WORLD, want_placement.dim)[rank]
        check(f"{path} (b) {key} local shard of rank {rank}", p.to_local().detach(), local)
        check(f"{path} (b) {key} full_tensor", p.full_tensor().detach(), want)
    check(f"{path} (b) extra.bf16", sd["extra.bf16"], dist_util.expected("extra.bf16"))
    check(f"{path} (b) extra.obj", sd["extra.obj"], dist_util.MAKE_OBJ)
    check(f"{path} (b) extra.raw", sd["extra.raw"], dist_util.MAKE_RAW)


def worker(rank, world, *paths):
    for path in paths:
        load_as_fsdp(rank, path)
        load_as_tp(rank, path)
        if rank == 0:
            print(f"loaded {path}: ok", flush=True)


if __name__ == "__main__":
    dist_util.main(os.path.abspath(__file__), WORLD, worker)
