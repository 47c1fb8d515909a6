"""A small stand-in for PyTorch's DTensorTestBase/with_comms (torch.testing._internal needs
expecttest, which the project does not install): each test method decorated with
@with_comms runs in `world_size` processes started by torch.multiprocessing, each with a gloo
process group (with backend = "nccl", an NCCL one on GPU `rank`) over a FileStore in a fresh
folder, and self.rank / self.world_size /
self.device_type set as PyTorch's tests have them. A failing rank fails the test with its
traceback. Also the seeds' MLPModule (net1 = Linear(10, 16), ReLU, net2 = Linear(16, 10)).
"""

import functools
import os
import shutil
import sys
import tempfile
import unittest

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn


class MLPModule(nn.Module):
    def __init__(self, device, bias=True):
        super().__init__()
        torch.manual_seed(5)
        self.net1 = nn.Linear(10, 16, bias=bias, device=device)
        self.relu = nn.ReLU()
        self.net2 = nn.Linear(16, 10, bias=bias, device=device)

    def forward(self, x):
        return self.net2(self.relu(self.net1(x)))


def _rank_main(rank, world, store_path, temp_dir, module, cls_name, method_name, backend):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, store=dist.FileStore(store_path, world), rank=rank,
                            world_size=world)
    try:
        mod = sys.modules.get(module) or __import__(module)
        case = getattr(mod, cls_name)(method_name)
        case.rank, case.temp_dir = rank, temp_dir
        getattr(case, method_name).__wrapped__(case)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # The test passed on this rank. Skip the interpreter's teardown, where gloo's threads and
    # tensors still referenced from Python have been seen to abort a finished process
    # (pytorch/pytorch#179291); a failure above still propagates with its traceback.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def with_comms(fn):
    """Runs the test body on every rank of a fresh gloo group."""

    @functools.wraps(fn)
    def run(self):
        folder = tempfile.mkdtemp(prefix="dcpp_dist_")
        try:
            module = type(self).__module__
            if module == "__main__":
                module = os.path.splitext(os.path.basename(sys.modules["__main__"].__file__))[0]
            mp.spawn(_rank_main, nprocs=self.world_size, join=True,
                     args=(self.world_size, folder + "/store", folder + "/ckpt", module,
                           type(self).__name__, fn.__name__, self.backend))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    run.__wrapped__ = fn
    return run


class DistTestCase(unittest.TestCase):
    world_size = 2
    backend = "gloo"  # "nccl" with device_type "cuda": one GPU per rank
    device_type = "cpu"
    rank = 0
    temp_dir = None
