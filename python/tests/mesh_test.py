"""2-D meshes on 4 gloo ranks: FSDP2 x TP (fully_shard over parallelize_module, which gives
_StridedShard placements) saved by dcpp and read by torch's dcp.load and the other way round,
and HSDP (Replicate x Shard) whose replicas are written once."""

import os
import unittest

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import dcpp
from dist_case import DistTestCase, MLPModule, with_comms


def full(v):
    return v.full_tensor() if isinstance(v, DTensor) else v


def reference():
    """The MLP's values as every rank's MLPModule starts (seeded)."""
    return {k: v.detach().clone() for k, v in MLPModule("cpu").state_dict().items()}


class MeshTest(DistTestCase):
    world_size = 4

    def fsdp_tp(self):
        mesh = init_device_mesh(self.device_type, (2, 2), mesh_dim_names=("dp", "tp"))
        model = parallelize_module(MLPModule(self.device_type), mesh["tp"],
                                   {"net1": ColwiseParallel(), "net2": RowwiseParallel()})
        fully_shard(model, mesh=mesh["dp"])
        return model

    def zeros_1d(self, like):
        """Zeros sharded on dim 0 over all 4 ranks, the same keys and shapes as `like`."""
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        return {k: distribute_tensor(torch.zeros(v.shape), mesh, [Shard(0)]) for k, v in like.items()}

    @with_comms
    def test_fsdp_tp_saved_by_dcpp_loaded_by_dcp(self):
        sd = self.fsdp_tp().state_dict()
        placements = sd["net1.weight"].placements
        self.assertEqual(type(placements[0]).__name__, "_StridedShard", placements)
        ref = reference()
        for fmt in ("dcp", "native"):
            path = os.path.join(self.temp_dir, fmt)
            dcpp.save(sd, path, format=fmt)
            target = self.zeros_1d(sd)
            if fmt == "dcp":
                dcp.load(target, checkpoint_id=path)
            else:
                dcpp.load(target, path)
            for k in ref:
                self.assertTrue(torch.equal(full(target[k]), ref[k]), f"{fmt} {k}")
            chunks = {t["key"]: len(t["chunks"]) for t in dcpp.inspect(path)["tensors"]}
            self.assertEqual(chunks["net1.weight"], 4)
            self.assertEqual(chunks["net2.bias"], 2)  # replicated over tp, sharded over dp

    @with_comms
    def test_dcp_saved_loaded_into_fsdp_tp(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        ref = reference()
        saved = {k: distribute_tensor(v, mesh, [Shard(0)]) for k, v in ref.items()}
        dcp.save(saved, checkpoint_id=self.temp_dir)
        model = self.fsdp_tp()
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        sd = model.state_dict()
        dcpp.load(sd, self.temp_dir)
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(full(v), ref[k]), k)

    @with_comms
    def test_hsdp_replicas_written_once(self):
        mesh = init_device_mesh(self.device_type, (2, 2), mesh_dim_names=("replicate", "shard"))
        model = MLPModule(self.device_type)
        fully_shard(model, mesh=mesh)
        sd = model.state_dict()
        self.assertEqual([type(p).__name__ for p in sd["net1.weight"].placements],
                         ["Replicate", "Shard"])
        dcpp.save(sd, self.temp_dir)
        chunks = {t["key"]: len(t["chunks"]) for t in dcpp.inspect(self.temp_dir)["tensors"]}
        self.assertEqual(chunks["net1.weight"], 2)
        target = self.zeros_1d(sd)
        dcpp.load(target, self.temp_dir)
        ref = reference()
        for k in ref:
            self.assertTrue(torch.equal(full(target[k]), ref[k]), k)


if __name__ == "__main__":
    unittest.main()
