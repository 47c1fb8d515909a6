"""PyTorch -> dcpp, the PyTorch side: real torch.distributed.checkpoint saves on 2 gloo ranks
(the seeds' scenarios), and rank 0 writes what each key should load as (compare_dump.py).

  python pytorch_save.py CKPTS REFS

CKPTS/fsdp  the seeds' MLP (Linear(10, 16), Linear(16, 10)) under FSDP2 fully_shard (every
            parameter a DTensor Shard(0)) and its Adam state after one step, through
            get_state_dict: {"model": ..., "optim": {"state": {fqn: {step, exp_avg,
            exp_avg_sq}}, "param_groups": [...]}}; plus "extra": objects (a list, a string,
            an int), a bf16 DTensor with uneven shards ([7, 5] Shard(0): 4 + 3 rows), uneven
            along dim 1 ([5, 3] Shard(1): 2 + 1 columns), a shard that is empty on rank 1
            ([1, 4] Shard(0)), float16 and int64 DTensors, a 0-d tensor, and a non-contiguous
            plain tensor (x.t(): torch.save keeps its strides).
CKPTS/tp    the MLP under parallelize_module (net1 ColwiseParallel, net2 RowwiseParallel) and
            its Adam state, saved with 2 writer threads per rank (2 files per rank).

REFS/<ckpt>/<fqn>.pt   each tensor whole (DTensor.full_tensor()), torch.save'd
REFS/<ckpt>/<fqn>.obj  each other value, torch.save'd
FQNs are DCP's flattened keys ("optim.state.net1.weight.exp_avg", "extra.list").
"""

import os

import dist_util

WORLD = 2


def adam_step(model, seed):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    torch.manual_seed(seed)
    model(torch.rand(4, 10)).sum().backward()
    opt.step()
    return opt


def fsdp_state(rank):
    import torch
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (WORLD,))
    model = dist_util.mlp(10, 16, 10, seed=0)
    fully_shard(model, mesh=mesh)
    opt = adam_step(model, seed=1)
    msd, osd = get_state_dict(model, opt)

    def arange(shape, dtype, scale=1.0):
        n = 1
        for s in shape:
            n *= s
        return (torch.arange(n, dtype=torch.float64) * scale - 3).reshape(shape).to(dtype)

    extra = {
        "list": [1, "a", 2.5],
        "string": "string",
        "int": 7,
        "bf16": distribute_tensor(arange([7, 5], torch.bfloat16, 0.37), mesh, [Shard(0)]),
        "uneven_dim1": distribute_tensor(arange([5, 3], torch.float32, 0.5), mesh, [Shard(1)]),
        "empty_on_rank1": distribute_tensor(arange([1, 4], torch.float32), mesh, [Shard(0)]),
        "f16": distribute_tensor(arange([6, 2], torch.float16, 0.25), mesh, [Shard(0)]),
        "i64": distribute_tensor(arange([9], torch.int64, 1e9), mesh, [Shard(0)]),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "transposed": arange([3, 4], torch.float32).t(),
    }
    assert not extra["transposed"].is_contiguous()
    return {"model": msd, "optim": osd, "extra": extra}


def tp_state(rank):
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (WORLD,))
    model = parallelize_module(dist_util.mlp(10, 16, 10, seed=2), mesh,
                               {"net1": ColwiseParallel(), "net2": RowwiseParallel()})
    opt = adam_step(model, seed=3)
    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "optim": osd}


def worker(rank, world, ckpts, refs):
    import torch.distributed.checkpoint as dcp

    sd = fsdp_state(rank)
    dcp.save(sd, checkpoint_id=os.path.join(ckpts, "fsdp"))
    dist_util.write_references(rank, sd, os.path.join(refs, "fsdp"))

    sd = tp_state(rank)
    dcp.save(sd, storage_writer=dcp.FileSystemWriter(os.path.join(ckpts, "tp"), thread_count=2))
    dist_util.write_references(rank, sd, os.path.join(refs, "tp"))
    if rank == 0:
        print(f"saved {ckpts}/fsdp and {ckpts}/tp", flush=True)


if __name__ == "__main__":
    dist_util.main(os.path.abspath(__file__), WORLD, worker)
