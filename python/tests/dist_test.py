"""The seeds' scenarios (PyTorch's own DCP tests, /work/shared/seeds) on 2 gloo ranks, written as
PyTorch writes them, with dcpp.save/dcpp.load in place of dist_cp.save/load: FSDP (FSDP2
fully_shard, Shard(0)) -> TP conversion of the MLP, row -> column reshard, uneven shards and an
uneven TP model into meta-device targets, replicated DTensors written once, async_save on a group of its own, DTensor checkpoints read by
torch's dcp.load and written by dcp.save, and AdamW with two param groups through
get_state_dict/set_state_dict."""

import os
import unittest

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import dcpp
from dist_case import DistTestCase, MLPModule, with_comms


def full(v):
    return v.full_tensor() if isinstance(v, DTensor) else v


class DcppDistTest(DistTestCase):
    def fsdp_model(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        model = MLPModule(self.device_type)
        fully_shard(model, mesh=mesh)
        return model

    def tp_model(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        model = MLPModule(self.device_type)
        plan = {"net1": ColwiseParallel(), "net2": RowwiseParallel()}
        return parallelize_module(model, mesh, plan)

    @with_comms
    def test_fsdp_to_tp(self):
        fsdp_state_dict = self.fsdp_model().state_dict()
        self.assertEqual(fsdp_state_dict["net1.weight"].placements, (Shard(0),))
        dcpp.save(fsdp_state_dict, checkpoint_id=self.temp_dir)

        tp_model = self.tp_model()
        optimizer = torch.optim.SGD(tp_model.parameters(), lr=0.25)
        torch.manual_seed(0)
        tp_model(torch.rand(20, 10)).sum().backward()
        optimizer.step()
        tp_state_dict = tp_model.state_dict()
        self.assertEqual(tp_state_dict["net1.weight"].placements, (Shard(0),))
        self.assertEqual(tp_state_dict["net2.weight"].placements, (Shard(1),))
        for k, v in fsdp_state_dict.items():
            self.assertFalse(torch.equal(full(v), full(tp_state_dict[k])), k)

        dcpp.load(tp_state_dict, checkpoint_id=self.temp_dir)
        tp_model.load_state_dict(tp_state_dict)
        after = tp_model.state_dict()
        for k, v in fsdp_state_dict.items():
            self.assertTrue(torch.equal(full(v), full(after[k])), k)

    @with_comms
    def test_row_to_column_reshard(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        torch.manual_seed(1)
        t = torch.randn(8, 6)
        for threads in (1, 2):
            path = os.path.join(self.temp_dir, f"t{threads}")
            saved = {"t": distribute_tensor(t, mesh, [Shard(0)]), "bytes": [1], "str": "string"}
            dcpp.save(saved, path, thread_count=threads)
            target = {"t": distribute_tensor(torch.zeros(8, 6), mesh, [Shard(1)]),
                      "bytes": None, "str": None}
            dcpp.load(target, path)
            self.assertTrue(torch.equal(target["t"].full_tensor(), t))
            self.assertEqual(target["t"].placements, (Shard(1),))
            self.assertEqual(target["bytes"], [1])
            self.assertEqual(target["str"], "string")

    @with_comms
    def test_uneven_shards_into_meta(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        torch.manual_seed(2)
        t = torch.randn(5, 3)  # 5 rows over 2 ranks: 3 and 2; then 3 columns: 2 and 1
        dcpp.save({"w": distribute_tensor(t, mesh, [Shard(0)])}, self.temp_dir)
        meta = distribute_tensor(torch.empty(5, 3, device="meta"), mesh, [Shard(1)])
        self.assertTrue(meta.to_local().is_meta)
        target = {"w": meta}
        dcpp.load(target, self.temp_dir)
        self.assertIsNot(target["w"], meta)
        self.assertEqual(target["w"].to_local().device.type, "cpu")
        self.assertEqual(target["w"].to_local().shape, (5, 2) if self.rank == 0 else (5, 1))
        self.assertTrue(torch.equal(target["w"].full_tensor(), t))

    @with_comms
    def test_uneven_tp_model_into_meta(self):
        """The seeds' test_tp_checkpoint: an MLP 5 -> 10 -> 15 -> 1 under TP over the world (15
        rows split 8/7), saved, then loaded into the same model built on the meta device under
        another TP plan (l2 row-wise, l3 column-wise: a reshard into tensors not yet allocated)."""
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        plan = {"l1": ColwiseParallel(), "l2": RowwiseParallel(), "l3": ColwiseParallel()}

        def uneven(device):
            torch.manual_seed(7)
            return torch.nn.ModuleDict({"l1": torch.nn.Linear(5, 10, device=device),
                                        "l2": torch.nn.Linear(10, 15, device=device),
                                        "l3": torch.nn.Linear(15, 1, device=device)})

        model = parallelize_module(uneven(self.device_type), mesh,
                                   {"l1": ColwiseParallel(), "l2": ColwiseParallel(),
                                    "l3": RowwiseParallel()})
        saved = model.state_dict()
        self.assertEqual(saved["l2.weight"].to_local().shape[0], 8 if self.rank == 0 else 7)
        dcpp.save(saved, self.temp_dir)

        meta = parallelize_module(uneven("meta"), mesh, plan)
        target = meta.state_dict()
        self.assertTrue(all(v.to_local().is_meta for v in target.values()))
        dcpp.load(target, self.temp_dir)
        self.assertEqual(list(target), list(saved))
        for k, v in saved.items():
            self.assertFalse(target[k].to_local().is_meta, k)
            self.assertEqual(target[k].placements, meta.state_dict()[k].placements, k)
            self.assertTrue(torch.equal(full(target[k]), full(v)), k)

    @with_comms
    def test_replicated_written_once(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        t = torch.arange(12.0).reshape(3, 4)
        dcpp.save({"r": distribute_tensor(t, mesh, [Replicate()]), "plain": t * 2}, self.temp_dir)
        md = dcpp.inspect(self.temp_dir)
        chunks = {x["key"]: x["chunks"] for x in md["tensors"]}
        self.assertEqual(len(chunks["r"]), 1)
        self.assertEqual(len(chunks["plain"]), 1)
        self.assertEqual(md["world_size"], self.world_size)
        got = {"r": distribute_tensor(torch.zeros(3, 4), mesh, [Shard(1)])}
        dcpp.load(got, self.temp_dir, allow_partial_load=True)
        self.assertTrue(torch.equal(got["r"].full_tensor(), t))

    @with_comms
    def test_dcpp_saves_dcp_loads(self):
        fsdp_state_dict = self.fsdp_model().state_dict()
        dcpp.save(fsdp_state_dict, self.temp_dir, format="dcp")
        tp_model = self.tp_model()
        tp_state_dict = {k: distribute_tensor(torch.zeros(v.shape), v.device_mesh, v.placements)
                         for k, v in tp_model.state_dict().items()}
        dcp.load(tp_state_dict, checkpoint_id=self.temp_dir)
        for k, v in fsdp_state_dict.items():
            self.assertTrue(torch.equal(full(v), full(tp_state_dict[k])), k)

    @with_comms
    def test_dcp_saves_dcpp_loads(self):
        tp_state_dict = self.tp_model().state_dict()
        dcp.save(tp_state_dict, checkpoint_id=self.temp_dir)
        target = {k: distribute_tensor(torch.zeros(v.shape), v.device_mesh, [Shard(0)])
                  for k, v in tp_state_dict.items()}
        dcpp.load(target, self.temp_dir)
        for k, v in tp_state_dict.items():
            self.assertTrue(torch.equal(full(v), full(target[k])), k)

    @with_comms
    def test_adamw_get_set_state_dict(self):
        def make():
            model = self.fsdp_model()
            groups = [{"params": [model.net1.weight, model.net1.bias], "lr": 0.01},
                      {"params": [model.net2.weight, model.net2.bias], "lr": 0.02,
                       "weight_decay": 0.5}]
            return model, torch.optim.AdamW(groups)

        model, optim = make()
        torch.manual_seed(3 + self.rank)
        for _ in range(2):
            model(torch.rand(4, 10)).sum().backward()
            optim.step()
            optim.zero_grad()
        msd, osd = get_state_dict(model, optim)
        dcpp.save({"model": msd, "optim": osd}, self.temp_dir)

        model2, optim2 = make()
        model2(torch.rand(4, 10)).sum().backward()  # state of its own, with other values
        optim2.step()
        msd2, osd2 = get_state_dict(model2, optim2)
        for name in ("exp_avg", "step"):
            self.assertFalse(torch.equal(full(osd2["state"]["net1.weight"][name]),
                                         full(osd["state"]["net1.weight"][name])), name)
        # As the seeds' test_fsdp_optim_state: the model first, then its optimizer's sharded
        # state against it, each a partial load of the one checkpoint.
        model_part = {"model": msd2}
        dcpp.load(model_part, self.temp_dir, allow_partial_load=True)
        optim_part = {"optim": osd2}
        dcpp.load(optim_part, self.temp_dir, allow_partial_load=True)
        set_state_dict(model2, optim2, model_state_dict=model_part["model"],
                       optim_state_dict=optim_part["optim"])

        msd3, osd3 = get_state_dict(model2, optim2)
        for k, v in msd.items():
            self.assertTrue(torch.equal(full(v), full(msd3[k])), k)
        for fqn, state in osd["state"].items():
            for name, v in state.items():
                self.assertTrue(torch.equal(full(v), full(osd3["state"][fqn][name])),
                                f"{fqn}.{name}")
        self.assertEqual([g["lr"] for g in osd3["param_groups"]], [0.01, 0.02])
        self.assertEqual(optim2.param_groups[1]["weight_decay"], 0.5)

    @with_comms
    def test_async_save_on_own_group(self):
        """async_save on a gloo group of its own: returns after the snapshot, so changing the
        DTensors at once does not reach the checkpoint; result() gives the save's stats."""
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        background = dist.new_group(backend="gloo")
        torch.manual_seed(4)
        t = torch.randn(64, 32)
        sd = {"w": distribute_tensor(t, mesh, [Shard(0)]), "step": 10}
        fut = dcpp.async_save(sd, self.temp_dir, process_group=background)
        sd["w"].to_local().fill_(7.0)  # the trainer's next step, while the save runs
        sd["step"] = 11
        dist.barrier()  # the trainer's own group stays usable meanwhile
        stats = fut.result()
        self.assertTrue(fut.done())
        self.assertGreater(stats["bytes_written"], 0)
        got = {"w": distribute_tensor(torch.zeros(64, 32), mesh, [Shard(1)]), "step": 0}
        dcpp.load(got, self.temp_dir)
        self.assertTrue(torch.equal(got["w"].full_tensor(), t))
        self.assertEqual(got["step"], 10)

    @with_comms
    def test_rank_error_names_key(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        dcpp.save({"w": distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)])}, self.temp_dir)
        target = {"w": distribute_tensor(torch.zeros(4, 3), mesh, [Shard(0)])}
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.load(target, self.temp_dir)
        self.assertIn("'w'", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
