"""PyTorch -> dcpp for DCP's compressed and safetensors-serialized variants, the PyTorch side:
real torch.distributed.checkpoint saves on 2 gloo ranks of one state dict, and rank 0 writes
what each key should load as (compare_dump.py).

  python pytorch_save_zstd.py CKPTS REFS

CKPTS/zstd  dcp.save with FileSystemWriter(_extensions=[ZStandard()]): every item (tensor
            chunks, objects) a zstd stream ("stream.zstd/1")
CKPTS/st    the tensors with FileSystemWriter(serialization_format=SAFETENSORS): each rank's
            file one safetensors blob with DCP_SHARDING_INFO in its __metadata__
CKPTS/hf    the tensors with HuggingFaceStorageWriter(save_distributed=True): each rank writes
            shard-0000<r>-model-00001-of-00001.safetensors (its shards, saved_offsets in
            __metadata__), and no .metadata
CKPTS/st_zstd  both SAFETENSORS and ZStandard (each tensor item an empty zstd frame, the
            blob uncompressed after them), which dcpp refuses
REFS/<fqn>.pt, REFS/<fqn>.obj  as pytorch_save.py writes them (objects only in zstd's)

The state dict: DTensors sharded unevenly over the 2 ranks (Shard(0) and Shard(1)) in
float32, bfloat16, float16 and int64, a large compressible float32 one (several zstd
blocks), a replicated plain tensor, a 0-d tensor; with zstd also a non-contiguous plain tensor
(x.t(), stored with its strides) and Python objects.
"""

import os
import sys
import warnings

import dist_util

WORLD = 2


def state(rank, with_objects):
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (WORLD,))

    def arange(shape, dtype, scale=1.0):
        n = 1
        for s in shape:
            n *= s
        return (torch.arange(n, dtype=torch.float64) * scale - 3).reshape(shape).to(dtype)

    sd = {
        "w": distribute_tensor(arange([7, 5], torch.float32, 0.37), mesh, [Shard(0)]),
        "cols": distribute_tensor(arange([5, 3], torch.float32, 0.5), mesh, [Shard(1)]),
        "bf16": distribute_tensor(arange([9, 4], torch.bfloat16, 0.25), mesh, [Shard(0)]),
        "f16": distribute_tensor(arange([6, 2], torch.float16, 0.125), mesh, [Shard(0)]),
        "i64": distribute_tensor(arange([9], torch.int64, 1e9), mesh, [Shard(0)]),
        # ~4 MiB of repeating values: zstd's output spans several blocks, and shrinks.
        "big": distribute_tensor((torch.arange(1 << 20) % 1000).float().reshape(1024, 1024), mesh, [Shard(0)]),
        "replicated": arange([3, 4], torch.float32, 1.5),
        "scalar": torch.tensor(2.5),
    }
    if with_objects:
        sd["transposed"] = arange([3, 4], torch.float32).t()
        sd["extra"] = {"list": [1, 2.5, "x"], "name": "zstd", "step": 7}
    return sd


def worker(rank, world, ckpts, refs):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._extension import ZStandard
    from torch.distributed.checkpoint.filesystem import SerializationFormat
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

    warnings.filterwarnings("ignore")
    sd = state(rank, with_objects=True)
    dcp.save(sd, storage_writer=dcp.FileSystemWriter(os.path.join(ckpts, "zstd"), _extensions=[ZStandard()]))
    dist_util.write_references(rank, sd, os.path.join(refs, "zstd"))
    sd = state(rank, with_objects=False)
    dcp.save(sd, storage_writer=dcp.FileSystemWriter(os.path.join(ckpts, "st"),
                                                     serialization_format=SerializationFormat.SAFETENSORS))
    dcp.save(sd, storage_writer=HuggingFaceStorageWriter(os.path.join(ckpts, "hf"), save_distributed=True))
    # Both at once, which dcpp refuses (the tensors are left uncompressed where no metadata says).
    dcp.save(sd, storage_writer=dcp.FileSystemWriter(os.path.join(ckpts, "st_zstd"), _extensions=[ZStandard()],
                                                     serialization_format=SerializationFormat.SAFETENSORS))
    dist_util.write_references(rank, sd, os.path.join(refs, "st"))
    if rank == 0:
        print("saved zstd, st, hf")
    # Every save is done on both ranks: leave without tearing the group down, which once in a
    # while aborts a rank here ("terminate called without an active exception").
    import torch.distributed as dist

    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    dist_util.main(__file__, WORLD, worker)
