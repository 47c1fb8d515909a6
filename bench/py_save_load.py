"""dcpp.save/load against torch.distributed.checkpoint's save/load from Python, on the same state
dict of DTensors, for each world size in one run (gloo ranks on this host).

  PYTHONPATH=bazel-bin/python/site python bench/py_save_load.py [--gib 2] [--worlds 1,4]
      [--dir /dev/shm/dcpp_py_bench] [--threads 2] [--repeat 3]

Build the package first (`bazel build -c opt //python:site`; `bazel run -c opt
//bench:py_save_load` builds both and passes --twin). The state dict holds 8 float32
tensors of (rows, 4096) whose sizes add up to --gib GiB, each Shard(0) over the ranks. Timed,
each between barriers, as the slowest rank sees it, best of --repeat interleaved runs: a save by dcpp (native format) and by DCP
(FileSystemWriter with the same thread count), a resharded load (into Shard(1) targets) of
each checkpoint by its own library (DCP's FileSystemReader has no thread count), and dcpp loading DCP's checkpoint. Prints one line per
figure and `BENCH <name> <value> <unit>` lines (seconds, dcp/dcpp ratios, and the share of
dcpp.save's time spent in the Python layer before the C++ engine runs). A raw baseline runs in
the same loop: every rank writes its own bytes to plain files (fsynced) and reads them back,
with the same thread count; py_{save,load}_room_w<world> (DCP's time over the raw time) is
the most any library could show against DCP on this machine, the room the >= 3x target needs.

With --twin PATH (bench/cpp_twin.cc, built as //bench:cpp_twin), each repetition also times
the same save and resharded load through the C++ API on the same sizes: every rank starts one
cpp_twin process, and they join a gloo group of their own; py_vs_cpp_{save,load}_w<world>
(Python's best time / the C++ API's best time; the target is <= 1.1) are printed too.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

TENSORS = 8
COLS = 4096


def state_dict(mesh, rows, placement, fill):
    from torch.distributed.tensor import distribute_tensor

    out = {}
    for i in range(TENSORS):
        full = torch.empty(rows, COLS) if not fill else torch.rand(rows, COLS)
        if not fill:
            full.zero_()
        out[f"layers.{i}.weight"] = distribute_tensor(full, mesh, [placement])
    return out


def timed(fn):
    dist.barrier()
    start = time.perf_counter()
    fn()
    dist.barrier()
    took = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    return took.item()


def raw_write(folder, tensors, threads):
    """The raw baseline of a save: each tensor's bytes written to a file of its own with plain
    unbuffered writes, `threads` at a time, each file fsynced (as a save's files are)."""
    from concurrent.futures import ThreadPoolExecutor

    os.makedirs(folder, exist_ok=True)

    def one(i):
        with open(os.path.join(folder, str(i)), "wb", buffering=0) as f:
            view = memoryview(tensors[i].numpy()).cast("B")
            while view:
                view = view[f.write(view):]
            os.fsync(f.fileno())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(tensors))))


def raw_read(folder, tensors, threads):
    """The raw baseline of a load: the files of raw_write read back into `tensors` (the same
    bytes a rank holds; a resharded load needs as many)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        with open(os.path.join(folder, str(i)), "rb", buffering=0) as f:
            view = memoryview(tensors[i].numpy()).cast("B")
            while view:
                view = view[f.readinto(view):]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(tensors))))


def twin_once(rank, world, rows, folder, args):
    """One repetition of the C++ API on the same sizes: every rank starts its own cpp_twin
    process (rank `rank` of a gloo group of `world` over a TCPStore on a port rank 0 picks) and
    waits for it. Returns rank 0's {"save": s, "load": s, "ok": bool}, None on other ranks."""
    port = [free_port() if rank == 0 else None]
    dist.broadcast_object_list(port, src=0)
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port[0]), OMP_NUM_THREADS="1")
    cmd = [args.twin, "--dir", folder, "--tensors", str(TENSORS), "--rows", str(rows), "--cols",
           str(COLS), "--threads", str(args.threads), "--repeat", "1"]
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    failed = torch.tensor([int(out.returncode != 0)])
    dist.all_reduce(failed)
    if failed.item():
        raise RuntimeError(f"cpp_twin failed on {failed.item()} of {world} ranks (this one: exit {out.returncode})")
    if rank != 0:
        return None
    line = next(l for l in out.stdout.splitlines() if l.startswith("TWIN "))
    return json.loads(line[len("TWIN "):])


def rank_main(rank, world, store, args, results):
    import dcpp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard

    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank,
                            world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    rows = int(args.gib * (1 << 30) / (TENSORS * COLS * 4))
    rows -= rows % (world * 8)
    torch.manual_seed(rank)
    sd = state_dict(mesh, rows, Shard(0), fill=True)
    base = os.path.join(args.dir, f"w{world}")
    ours, theirs, raw = base + "/dcpp", base + "/dcp", f"{base}/raw{rank}"
    local = [v.to_local() for v in sd.values()]
    back = [torch.empty_like(v) for v in local]
    t = {}

    def best(name, fn):
        t[name] = min(t.get(name, float("inf")), timed(fn))

    from dcpp import _flat
    ok = True
    for _ in range(args.repeat):
        # What the Python layer adds before the engine starts (flattening, DTensor boxes): the
        # rest of dcpp.save is the C++ save itself.
        best("python_prep", lambda: _flat.split(sd))
        best("raw_write", lambda: raw_write(raw, local, args.threads))
        best("raw_read", lambda: raw_read(raw, back, args.threads))
        best("save_dcpp", lambda: dcpp.save(sd, ours, thread_count=args.threads))
        best("save_dcp", lambda: dcp.save(
            sd, storage_writer=dcp.FileSystemWriter(theirs, thread_count=args.threads)))
        target = state_dict(mesh, rows, Shard(1), fill=False)
        best("load_dcpp", lambda: dcpp.load(target, ours, thread_count=args.threads))
        ok = ok and all(torch.equal(target[k].full_tensor(), sd[k].full_tensor()) for k in list(sd)[:2])
        target = state_dict(mesh, rows, Shard(1), fill=False)
        best("load_dcp", lambda: dcp.load(target, checkpoint_id=theirs))  # DCP reads serially
        target = state_dict(mesh, rows, Shard(1), fill=False)
        best("load_dcpp_of_dcp", lambda: dcpp.load(target, theirs, thread_count=args.threads))
        del target
        if args.twin:  # the C++ API, in the same loop so that background load hits both alike
            c = twin_once(rank, world, rows, base + "/twin", args)
            if rank == 0:
                t["cpp_save"] = min(t.get("cpp_save", float("inf")), c["save"])
                t["cpp_load"] = min(t.get("cpp_load", float("inf")), c["load"])
                ok = ok and c["ok"]
    if rank == 0:
        t["bytes"] = TENSORS * rows * COLS * 4
        t["ok"] = ok
        results.put(t)
        shutil.rmtree(base, ignore_errors=True)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=2.0)
    p.add_argument("--worlds", default="1,4")
    p.add_argument("--dir", default="/dev/shm/dcpp_py_bench")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs, interleaved")
    p.add_argument("--twin", default=os.environ.get("DCPP_CPP_TWIN"),
                   help="the cpp_twin binary: also time the C++ API on the same data")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    ctx = mp.get_context("spawn")
    for world in [int(w) for w in args.worlds.split(",")]:
        results = ctx.Queue()
        store = tempfile.mkdtemp(prefix="dcpp_bench_store_")
        mp.spawn(rank_main, nprocs=world, join=True, args=(world, store + "/s", args, results))
        shutil.rmtree(store, ignore_errors=True)
        t = results.get()
        gib = t["bytes"] / (1 << 30)
        print(f"world {world}: {gib:.2f} GiB of DTensors, {args.threads} threads per rank, "
              f"resharded load {'correct' if t['ok'] else 'WRONG'}")
        for name in ("raw_write", "raw_read", "save_dcpp", "save_dcp", "load_dcpp", "load_dcp", "load_dcpp_of_dcp"):
            print(f"  {name:18s} {t[name]:7.3f} s  {gib / t[name]:6.2f} GiB/s")
        save_ratio, load_ratio = t["save_dcp"] / t["save_dcpp"], t["load_dcp"] / t["load_dcpp"]
        print(f"  dcp/dcpp: save {save_ratio:.2f}x, load {load_ratio:.2f}x")
        prep = t["python_prep"] / t["save_dcpp"]
        print(f"  Python layer's share of dcpp.save: {prep:.4f} ({t['python_prep'] * 1e3:.2f} ms)")
        print(f"BENCH py_layer_share_of_save_w{world} {prep:.4f} fraction")
        for name in ("save_dcpp", "save_dcp", "load_dcpp", "load_dcp", "load_dcpp_of_dcp"):
            print(f"BENCH py_{name}_w{world} {t[name]:.4f} s")
        # The most any library could show against DCP here: DCP's time over the raw I/O time.
        room_save, room_load = t["save_dcp"] / t["raw_write"], t["load_dcp"] / t["raw_read"]
        print(f"  room left by raw I/O (DCP time / raw time): save {room_save:.2f}x, load {room_load:.2f}x")
        print(f"BASELINE w{world}: raw write {gib / t['raw_write']:.2f} GiB/s, raw read {gib / t['raw_read']:.2f} GiB/s "
              f"(every rank its own bytes, {args.threads} threads); dcp.save {gib / t['save_dcp']:.2f} GiB/s, "
              f"dcp.load (resharded) {gib / t['load_dcp']:.2f} GiB/s")
        print(f"BENCH py_save_room_w{world} {room_save:.3f} x")
        print(f"BENCH py_load_room_w{world} {room_load:.3f} x")
        print(f"BENCH py_save_ratio_w{world} {save_ratio:.3f} x")
        print(f"BENCH py_load_ratio_w{world} {load_ratio:.3f} x")
        if not args.twin:
            print("  (no --twin: the C++ API was not timed on this data)")
            continue
        print(f"  C++ API on the same data: save {t['cpp_save']:.3f} s, resharded load {t['cpp_load']:.3f} s")
        print(f"BASELINE w{world}: the C++ API, save {gib / t['cpp_save']:.2f} GiB/s, resharded load "
              f"{gib / t['cpp_load']:.2f} GiB/s")
        for op in ("save", "load"):
            print(f"BENCH py_vs_cpp_{op}_w{world} {t[op + '_dcpp'] / t['cpp_' + op]:.3f} ratio")


if __name__ == "__main__":
    main()
