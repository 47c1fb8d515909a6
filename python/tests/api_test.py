"""dcpp's Python API in one process: nested state dicts with objects, thread counts, DCP
interop both ways, async_save's snapshot, meta-device targets, the tools, and errors."""

import os
import tempfile
import unittest

import torch
import torch.distributed.checkpoint as dcp

import dcpp


def nested_state_dict(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {"net1.weight": torch.randn(16, 10, generator=g),
                  "net1.bias": torch.randn(16, generator=g),
                  "emb": torch.randint(0, 100, (7, 3), generator=g),
                  "half": torch.randn(5, 2, generator=g).to(torch.bfloat16)},
        "optim": {"state": {0: {"step": torch.tensor(float(seed)),
                                "exp_avg": torch.randn(16, 10, generator=g)}},
                  "param_groups": [{"lr": 0.1 * seed, "params": [0], "name": f"g{seed}"}]},
        "bytes": [1],
        "str": "string",
        "epoch": seed,
        "none": None if seed else 0,
        "pair": (seed, "x"),
        "tensors": [torch.full((2,), float(seed)), {"deep": torch.full((3,), float(seed))}],
    }


def zero_like(sd):
    """The same structure with different values (and objects), as a fresh trainer has it."""
    out = nested_state_dict(0)
    for v in [out["model"], out["optim"]["state"][0]]:
        for k in v:
            v[k] = torch.zeros_like(v[k])
    return out


class ApiTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def assertStateDictEqual(self, got, want):
        self.assertEqual(type(got), type(want))
        if isinstance(want, dict):
            self.assertEqual(list(got.keys()), list(want.keys()))
            for k in want:
                self.assertStateDictEqual(got[k], want[k])
        elif isinstance(want, (list, tuple)):
            self.assertEqual(len(got), len(want))
            for a, b in zip(got, want):
                self.assertStateDictEqual(a, b)
        elif isinstance(want, torch.Tensor):
            self.assertEqual(got.dtype, want.dtype)
            self.assertTrue(torch.equal(got, want), f"{got} != {want}")
        else:
            self.assertEqual(got, want)

    def test_round_trip_nested_with_objects(self):
        for threads in (1, 2):
            with self.subTest(thread_count=threads):
                path = os.path.join(self.dir, f"t{threads}")
                saved = nested_state_dict(3)
                dcpp.save(saved, path, thread_count=threads)
                target = zero_like(saved)
                self.assertNotEqual(target["epoch"], saved["epoch"])
                weight = target["model"]["net1.weight"]
                dcpp.load(target, checkpoint_id=path)
                self.assertStateDictEqual(target, saved)
                self.assertIs(target["model"]["net1.weight"], weight)  # in place

    def test_keys_are_dcp_keys(self):
        path = os.path.join(self.dir, "c")
        dcpp.save(nested_state_dict(1), path)
        md = dcpp.inspect(path)
        keys = {t["key"] for t in md["tensors"]} | {b["key"] for b in md["bytes"]}
        from torch.distributed.checkpoint._nested_dict import flatten_state_dict
        self.assertEqual(keys, set(flatten_state_dict(nested_state_dict(1))[0]))
        self.assertIn("optim.state.0.exp_avg", keys)
        self.assertIn("tensors.1.deep", keys)
        self.assertEqual(md["format"], "dcpp")
        values = {b["key"]: b.get("value") for b in md["bytes"]}
        self.assertEqual(values["str"], repr("string"))
        self.assertEqual(values["bytes"], repr([1]))
        self.assertEqual(values["epoch"], repr(1))
        report = dcpp.verify(path)
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["tensors"], len(md["tensors"]))

    def test_dcpp_dcp_format_read_by_torch(self):
        path = os.path.join(self.dir, "c")
        saved = nested_state_dict(2)
        dcpp.save(saved, path, format="dcp")
        self.assertEqual(dcpp.inspect(path)["format"], "dcp")
        report = dcpp.verify(path)
        self.assertTrue(report["ok"], report)
        self.assertGreater(report["chunks_checked"], 0)
        target = zero_like(saved)
        dcp.load(target, checkpoint_id=path)
        self.assertStateDictEqual(target, saved)

    def test_torch_dcp_read_by_dcpp(self):
        path = os.path.join(self.dir, "c")
        saved = nested_state_dict(4)
        dcp.save(saved, checkpoint_id=path)
        target = zero_like(saved)
        dcpp.load(target, path)
        self.assertStateDictEqual(target, saved)

    def test_meta_targets_are_allocated(self):
        path = os.path.join(self.dir, "c")
        saved = {"a": torch.arange(6.0).reshape(2, 3), "b": {"c": torch.ones(4, dtype=torch.int64)}}
        dcpp.save(saved, path)
        target = {"a": torch.empty(2, 3, device="meta"),
                  "b": {"c": torch.empty(4, dtype=torch.int64, device="meta")}}
        dcpp.load(target, path)
        self.assertEqual(target["a"].device.type, "cpu")
        self.assertStateDictEqual(target, saved)

    def test_async_save_snapshot(self):
        path = os.path.join(self.dir, "c")
        w = torch.arange(1 << 16, dtype=torch.float32)
        sd = {"w": w, "step": 1}
        fut = dcpp.async_save(sd, path)
        w.fill_(-1.0)  # after async_save returned: must not reach the checkpoint
        sd["step"] = 2
        stats = fut.result()
        self.assertTrue(fut.done())
        self.assertGreater(stats["bytes_written"], w.numel() * 4 - 1)
        got = {"w": torch.zeros_like(w), "step": 0}
        dcpp.load(got, path)
        self.assertTrue(torch.equal(got["w"], torch.arange(1 << 16, dtype=torch.float32)))
        self.assertEqual(got["step"], 1)

    def test_async_save_error_at_result(self):
        path = os.path.join(self.dir, "c")
        fut = dcpp.async_save({"w": torch.ones(3)}, path, planner=os.path.join(self.dir, "no.lua"))
        with self.assertRaises(dcpp.Error) as cm:
            fut.result()
        self.assertIn("no.lua", str(cm.exception))

    def test_gil_released_during_io(self):
        """A Python thread keeps running while the engine saves and loads: some of its steps
        fall in the middle half of the C++ call (none could, were the GIL held)."""
        import threading
        import time
        from dcpp import _C

        calls, ticks, stop = [], [], threading.Event()

        def timed(fn):
            def wrapper(*args):
                start = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    calls.append((start, time.perf_counter()))
            return wrapper

        def ticker():
            while not stop.is_set():
                ticks.append(time.perf_counter())

        path = os.path.join(self.dir, "c")
        sd = {"w": torch.rand(16 << 20)}  # 64 MiB
        orig_save, orig_load = _C.save, _C.load
        _C.save, _C.load = timed(orig_save), timed(orig_load)
        thread = threading.Thread(target=ticker)
        thread.start()
        try:
            dcpp.save(sd, path, thread_count=2)
            dcpp.load({"w": torch.empty(16 << 20)}, path)
        finally:
            stop.set()
            thread.join()
            _C.save, _C.load = orig_save, orig_load
        self.assertEqual(len(calls), 2)
        for start, end in calls:
            lo, hi = start + (end - start) / 4, end - (end - start) / 4
            self.assertGreater(sum(lo < t < hi for t in ticks), 0, (start, end))

    def test_missing_key_names_it(self):
        path = os.path.join(self.dir, "c")
        dcpp.save({"a": torch.ones(2)}, path)
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.load({"a": torch.zeros(2), "missing.key": torch.zeros(2)}, path)
        self.assertIsInstance(cm.exception, RuntimeError)
        self.assertIn("missing.key", str(cm.exception))
        got = {"a": torch.zeros(2), "missing.key": torch.zeros(2), "obj": "kept"}
        dcpp.load(got, path, allow_partial_load=True)
        self.assertTrue(torch.equal(got["a"], torch.ones(2)))
        self.assertEqual(got["obj"], "kept")

    def test_shape_mismatch_names_key(self):
        path = os.path.join(self.dir, "c")
        dcpp.save({"layer.w": torch.ones(2, 3)}, path)
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.load({"layer.w": torch.zeros(3, 2)}, path)
        self.assertIn("layer.w", str(cm.exception))

    def test_unpicklable_value_names_key(self):
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.save({"fn": {"cb": lambda x: x}}, os.path.join(self.dir, "c"))
        self.assertIn("fn.cb", str(cm.exception))

    def test_unsafe_object_is_refused_on_load(self):
        path = os.path.join(self.dir, "c")
        dcpp.save({"obj": Custom(5)}, path)
        warnings = dcpp.inspect(path).get("warnings", [])
        self.assertTrue(any("'obj'" in w and "Custom" in w for w in warnings), warnings)
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.load({"obj": None}, path)
        self.assertIn("'obj'", str(cm.exception))
        self.assertIn("weights_only", str(cm.exception))
        with torch.serialization.safe_globals([Custom]):
            got = {"obj": None}
            dcpp.load(got, path)
        self.assertEqual(got["obj"].value, 5)

    def test_bad_format_and_missing_folder(self):
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.save({"a": torch.ones(1)}, os.path.join(self.dir, "c"), format="zip")
        self.assertIn("zip", str(cm.exception))
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.inspect(os.path.join(self.dir, "nothing"))
        self.assertIn("nothing", str(cm.exception))

    def test_convert_fsdp_to_tp(self):
        src, dst = os.path.join(self.dir, "fsdp"), os.path.join(self.dir, "tp")
        w1, w2 = torch.randn(16, 10), torch.randn(10, 16)
        dcpp.save({"net1.weight": w1, "net1.bias": torch.zeros(16), "net2.weight": w2,
                   "net2.bias": torch.ones(10)}, src)
        res = dcpp.convert(src, dst, planner="planners/fsdp_to_tp.lua", world_size=2)
        layouts = {k["key"]: k["target_layout"] for k in res["keys"]}
        self.assertEqual(layouts["net1.weight"], "Shard(0)@[2]")
        self.assertEqual(layouts["net2.weight"], "Shard(1)@[2]")
        got = {"net1.weight": torch.zeros(16, 10), "net2.weight": torch.zeros(10, 16)}
        dcpp.load(got, dst, allow_partial_load=True)
        self.assertTrue(torch.equal(got["net1.weight"], w1))
        self.assertTrue(torch.equal(got["net2.weight"], w2))
        chunks = {t["key"]: len(t["chunks"]) for t in dcpp.inspect(dst)["tensors"]}
        self.assertEqual(chunks["net1.weight"], 2)

        # Casting on the way out: bf16 but net2's bias, as Tensor.to() rounds.
        bf = os.path.join(self.dir, "bf16")
        res = dcpp.convert(src, bf, world_size=2, dtype=["net2.bias=keep", "bf16"])
        self.assertEqual({k["key"]: k["target_dtype"] for k in res["keys"]},
                         {"net1.weight": "bfloat16", "net1.bias": "bfloat16", "net2.weight": "bfloat16",
                          "net2.bias": "float32"})
        got = {"net1.weight": torch.zeros(16, 10, dtype=torch.bfloat16), "net2.bias": torch.zeros(10)}
        dcpp.load(got, bf, allow_partial_load=True)
        self.assertTrue(torch.equal(got["net1.weight"], w1.to(torch.bfloat16)))
        self.assertTrue(torch.equal(got["net2.bias"], torch.ones(10)))
        with self.assertRaises(dcpp.Error) as cm:
            dcpp.convert(src, os.path.join(self.dir, "x"), dtype="int3")
        self.assertIn("unknown dtype 'int3'", str(cm.exception))


class Custom:
    def __init__(self, value):
        self.value = value


if __name__ == "__main__":
    unittest.main()
