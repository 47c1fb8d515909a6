"""dcpp.dcp's FileSystemWriter/FileSystemReader under torch's own dcp.save and dcp.load: DCP's
planners on top, dcpp's engine underneath; in one process and on 2 gloo ranks (FSDP2 saved
through the plugin, loaded into TP by torch's reader and by the plugin's)."""

import os
import tempfile
import unittest

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import dcpp
import dcpp.dcp
from dist_case import DistTestCase, MLPModule, with_comms


def sample(seed):
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(6, 4, generator=g), "b": torch.randint(0, 9, (5,), generator=g)},
            "step": seed, "extra": [1, "string"]}


def blank():
    return {"model": {"w": torch.zeros(6, 4), "b": torch.zeros(5, dtype=torch.int64)},
            "step": None, "extra": None}


def full(v):
    return v.full_tensor() if isinstance(v, DTensor) else v


class PluginTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def check(self, got, want):
        self.assertTrue(torch.equal(got["model"]["w"], want["model"]["w"]))
        self.assertTrue(torch.equal(got["model"]["b"], want["model"]["b"]))
        self.assertEqual(got["step"], want["step"])
        self.assertEqual(got["extra"], want["extra"])

    def test_writer_output_read_by_torch_and_dcpp(self):
        path = os.path.join(self.dir, "c")
        saved = sample(1)
        dcp.save(saved, storage_writer=dcpp.dcp.FileSystemWriter(path, thread_count=2))
        md = dcpp.inspect(path)
        self.assertEqual(md["format"], "dcp")
        self.assertEqual(sorted(t["key"] for t in md["tensors"]), ["model.b", "model.w"])
        report = dcpp.verify(path)
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["tensors"], 2)
        got = blank()
        dcp.load(got, checkpoint_id=path)  # torch's own FileSystemReader
        self.check(got, saved)
        got = blank()
        dcpp.load(got, path)
        self.check(got, saved)

    def test_reader_reads_native_and_torch_dcp(self):
        native, torch_dcp = os.path.join(self.dir, "n"), os.path.join(self.dir, "t")
        dcpp.save(sample(2), native)
        dcp.save(sample(3), checkpoint_id=torch_dcp)
        for path, seed in ((native, 2), (torch_dcp, 3)):
            got = blank()
            dcp.load(got, storage_reader=dcpp.dcp.FileSystemReader(path))
            self.check(got, sample(seed))

    def failure(self, cm):
        """The error behind DCP's CheckpointException (one per failed rank)."""
        failures = getattr(cm.exception, "failures", None)
        return next(iter(failures.values()))[0] if failures else cm.exception

    def test_reader_corrupt_data_raises(self):
        path = os.path.join(self.dir, "c")
        dcpp.save({"a": torch.ones(1000)}, path)
        data = [f for f in os.listdir(path) if f.endswith(".distcp")][0]
        with open(os.path.join(path, data), "r+b") as f:
            f.seek(-100, os.SEEK_END)
            f.write(b"\x7f" * 8)
        with self.assertRaises(BaseException) as cm:  # DCP's CheckpointException
            dcp.load({"a": torch.zeros(1000)}, storage_reader=dcpp.dcp.FileSystemReader(path))
        err = self.failure(cm)
        self.assertIsInstance(err, dcpp.Error)
        self.assertIn("checksum mismatch for key 'a'", str(err))
        report = dcpp.verify(path)
        self.assertFalse(report["ok"])
        self.assertEqual(report["problems"][0]["key"], "a")


class PluginDistTest(DistTestCase):
    @with_comms
    def test_fsdp_saved_by_plugin_loaded_as_tp(self):
        mesh = init_device_mesh(self.device_type, (self.world_size,))
        fsdp = MLPModule(self.device_type)
        fully_shard(fsdp, mesh=mesh)
        saved = fsdp.state_dict()
        dcp.save(saved, storage_writer=dcpp.dcp.FileSystemWriter(self.temp_dir))

        for reader in (None, dcpp.dcp.FileSystemReader(self.temp_dir)):
            tp = parallelize_module(MLPModule(self.device_type), mesh,
                                    {"net1": ColwiseParallel(), "net2": RowwiseParallel()})
            with torch.no_grad():
                for p in tp.parameters():
                    p.zero_()
            sd = tp.state_dict()
            if reader is None:
                dcp.load(sd, checkpoint_id=self.temp_dir)
            else:
                dcp.load(sd, storage_reader=reader)
            for k, v in saved.items():
                self.assertTrue(torch.equal(full(v), full(tp.state_dict()[k])), k)

    @with_comms
    def test_no_dist_saves_alone(self):
        """dcp.save(no_dist=True) on each rank, into a folder of its own: no collective (the
        writer told so); without process_group=None, ranks other than 0 refuse at once."""
        path = os.path.join(self.temp_dir, f"rank{self.rank}")
        saved = {"v": torch.full((3,), float(self.rank))}
        dcp.save(saved, storage_writer=dcpp.dcp.FileSystemWriter(path, process_group=None),
                 no_dist=True)
        md = dcpp.inspect(path)
        self.assertEqual(md["world_size"], 1)
        got = {"v": torch.zeros(3)}
        dcp.load(got, checkpoint_id=path, no_dist=True)
        self.assertTrue(torch.equal(got["v"], saved["v"]))
        if self.rank != 0:
            with self.assertRaises(BaseException) as cm:
                dcp.save(saved, storage_writer=dcpp.dcp.FileSystemWriter(path + "x"),
                         no_dist=True)
            err = next(iter(cm.exception.failures.values()))[0]
            self.assertIsInstance(err, dcpp.Error)
            self.assertIn("process_group=None", str(err))


if __name__ == "__main__":
    unittest.main()
