"""dcpp's Python API on CUDA tensors: one process (CUDA tensors saved and loaded in place, into
CPU targets and from CPU-saved checkpoints, async_save's snapshot of device memory) and, with
two GPUs, FSDP -> TP of the seeds' MLP on 2 NCCL ranks. Every test skips, saying why, without
the GPUs it needs."""

import os
import tempfile
import unittest

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import dcpp
from dist_case import DistTestCase, MLPModule, with_comms

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def cuda_state_dict(seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(32, 24, generator=g)
    return {
        "w": base.cuda(),
        "w_t": base.t().cuda(),  # non-contiguous: staged through the pinned ring
        "bf16": torch.randn(7, 5, generator=g).to(torch.bfloat16).cuda(),
        "ids": torch.randint(0, 1000, (9,), generator=g).cuda(),
        "mask": (torch.randn(11, generator=g) > 0).cuda(),
        "step": torch.tensor(float(seed)).cuda(),
        "epoch": seed,
    }


@unittest.skipUnless(GPUS >= 1, "needs a CUDA GPU (none here)")
class CudaTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def assertSame(self, got, want):
        self.assertEqual(set(got), set(want))
        for k, w in want.items():
            if isinstance(w, torch.Tensor):
                self.assertEqual(got[k].dtype, w.dtype, k)
                self.assertTrue(torch.equal(got[k].cpu(), w.cpu()), k)
            else:
                self.assertEqual(got[k], w, k)

    def test_cuda_round_trip_in_place(self):
        saved = cuda_state_dict(1)
        path = os.path.join(self.dir, "c")
        dcpp.save(saved, path, thread_count=2)
        target = {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else 0 for k, v in saved.items()}
        before = target["w"]
        dcpp.load(target, path)
        self.assertIs(target["w"], before)
        self.assertTrue(target["w"].is_cuda)
        self.assertSame(target, saved)

    def test_cuda_to_cpu_and_cpu_to_cuda(self):
        saved = cuda_state_dict(2)
        path = os.path.join(self.dir, "c")
        dcpp.save(saved, path)
        on_cpu = {k: torch.zeros_like(v, device="cpu") if isinstance(v, torch.Tensor) else 0
                  for k, v in saved.items()}
        dcpp.load(on_cpu, path)
        self.assertSame(on_cpu, saved)
        path2 = os.path.join(self.dir, "c2")
        dcpp.save(on_cpu, path2)
        on_gpu = {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else 0 for k, v in saved.items()}
        dcpp.load(on_gpu, path2)
        self.assertTrue(all(v.is_cuda for v in on_gpu.values() if isinstance(v, torch.Tensor)))
        self.assertSame(on_gpu, saved)

    def test_async_save_snapshots_device_memory(self):
        saved = cuda_state_dict(3)
        want = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in saved.items()}
        path = os.path.join(self.dir, "c")
        future = dcpp.async_save(saved, path)
        saved["w"].add_(1)  # the trainer moves on: the checkpoint keeps the values at the call
        future.result()
        got = {k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else 0 for k, v in want.items()}
        dcpp.load(got, path)
        self.assertSame(got, want)


@unittest.skipUnless(GPUS >= 2, f"needs 2 CUDA GPUs ({GPUS} here)")
class CudaDistTest(DistTestCase):
    backend = "nccl"
    device_type = "cuda"

    @with_comms
    def test_fsdp_to_tp_over_nccl(self):
        mesh = init_device_mesh("cuda", (self.world_size,))
        fsdp = MLPModule("cuda")
        fully_shard(fsdp, mesh=mesh)
        saved = fsdp.state_dict()
        self.assertEqual(saved["net1.weight"].placements, (Shard(0),))
        dcpp.save(saved, checkpoint_id=self.temp_dir)

        tp = parallelize_module(MLPModule("cuda"), mesh, {"net1": ColwiseParallel(), "net2": RowwiseParallel()})
        target = {k: torch.zeros_like(v) for k, v in tp.state_dict().items()}
        dcpp.load(target, checkpoint_id=self.temp_dir)
        for k, v in target.items():
            self.assertIsInstance(v, DTensor)
            self.assertTrue(v.to_local().is_cuda, k)
            self.assertTrue(torch.equal(v.full_tensor(), saved[k].full_tensor()), k)


if __name__ == "__main__":
    unittest.main()
