"""PyTorch side of //bench:dcp_load: writes the DCP checkpoint and times PyTorch's own loads.

    python3 dcp_load_baseline.py write SPEC_JSON DIR
    python3 dcp_load_baseline.py load  SPEC_JSON DIR REPS THREADS     (THREADS: e.g. "1,2")
    python3 dcp_load_baseline.py write4 SPEC_JSON DIR WORLD
    python3 dcp_load_baseline.py load4 SPEC_JSON DIR REPS WORLD

SPEC_JSON lists the tensors ([{"name", "dtype", "shape"}, ...]) that dcp_load.cc describes;
tensor i holds frac(k * 0.6180339887 + i * 0.37) at flat element k (computed in float32, then
cast), the formula dcp_load.cc checks rows against.

write   builds the tensors and saves them with torch.distributed.checkpoint.save
        (FileSystemWriter defaults: one __0_0.distcp file, torch.save archives), single
        process, no_dist=True: a consolidated checkpoint, full tensors.
write4  the same tensors saved by WORLD processes (gloo), each holding the Shard(0) slice of
        every tensor as a DTensor: a sharded checkpoint, one __<rank>_0.distcp file per rank,
        each slice its own chunk.
load    single process, no_dist=True: dcp.load in place into preallocated zeroed tensors, best
        of REPS for each intra-op thread count in THREADS (torch.set_num_threads), interleaved.
load4   WORLD processes (torch.multiprocessing spawn, gloo over a FileStore, CPU), each holding
        the Shard(0) slice of every tensor as a DTensor on init_device_mesh("cpu", (WORLD,));
        each rep: zero, barrier, dcp.load, barrier; the rep's time is the max over ranks
        (all_reduce MAX of each rank's barrier-to-barrier time); best of REPS.

Tensors are zeroed before every timed load (untimed) and the loaded values are checked
afterwards (a few rows per tensor and shard). The last stdout line is
    DCP_RESULT {json}
"""
import json
import os
import sys
import tempfile
import time
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GOLDEN = 0.6180339887


def numel_of(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def generate(spec, i):
    t = torch.arange(numel_of(spec["shape"]), dtype=torch.float32).mul_(GOLDEN).add_(0.37 * i).frac_()
    return t.to(DTYPES[spec["dtype"]]).reshape(spec["shape"]).contiguous()


def expected_rows(spec, i, row, count):
    """Rows row .. row+count-1 (along dim 0) of tensor i, as generate() makes them."""
    shape = spec["shape"]
    inner = numel_of(shape[1:])
    k0 = row * inner
    t = torch.arange(k0, k0 + count * inner, dtype=torch.float32).mul_(GOLDEN).add_(0.37 * i).frac_()
    return t.to(DTYPES[spec["dtype"]]).reshape([count] + list(shape[1:]))


def check_rows(specs, tensors, row_starts, what):
    """tensors[i] holds rows row_starts[i] .. of tensor i: checks its first, middle, last rows."""
    for i, (s, t) in enumerate(zip(specs, tensors)):
        n = t.shape[0]
        for r in sorted({0, (i * 37) % n, n - 1}):
            if not torch.equal(t[r : r + 1], expected_rows(s, i, row_starts[i] + r, 1)):
                raise SystemExit(f"{what}: {s['name']} row {row_starts[i] + r} has wrong data")


def result(obj):
    print("DCP_RESULT " + json.dumps(obj), flush=True)


def cmd_write(specs, ckpt):
    t0 = time.perf_counter()
    sd = {s["name"]: generate(s, i) for i, s in enumerate(specs)}
    gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    dcp.save(sd, storage_writer=dcp.FileSystemWriter(ckpt), no_dist=True)
    save = time.perf_counter() - t0
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    print(f"pytorch: generated {len(sd)} tensors ({nbytes / 2**20:.0f} MiB) in {gen:.2f} s, "
          f"dcp.save (FileSystemWriter defaults) {save:.2f} s", flush=True)
    result({"bytes": nbytes, "save": save})


def cmd_load(specs, ckpt, reps, thread_counts):
    dst = {s["name"]: torch.zeros(s["shape"], dtype=DTYPES[s["dtype"]]) for s in specs}
    best = {t: float("inf") for t in thread_counts}
    for _ in range(reps):
        for t in thread_counts:
            torch.set_num_threads(t)
            for v in dst.values():
                v.zero_()
            t0 = time.perf_counter()
            dcp.load(dst, checkpoint_id=ckpt, no_dist=True)
            best[t] = min(best[t], time.perf_counter() - t0)
            check_rows(specs, list(dst.values()), [0] * len(specs), f"dcp.load (threads={t})")
    nbytes = sum(t.numel() * t.element_size() for t in dst.values())
    result({"bytes": nbytes, "load": {str(t): v for t, v in best.items()}})


def shard_rows(n, world, rank):
    """Rows [begin, end) of dim 0 that rank holds under Shard(0) (torch.chunk's split)."""
    per = -(-n // world)
    begin = min(n, rank * per)
    return begin, min(n, begin + per)


def init_ranks(rank, world, store):
    from torch.distributed.device_mesh import init_device_mesh

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # WORLD processes share the cores
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
    return init_device_mesh("cpu", (world,))


def write4_worker(rank, world, specs, ckpt, store):
    from torch.distributed.tensor import DTensor, Shard

    mesh = init_ranks(rank, world, store)
    sd, nbytes = {}, 0
    for i, s in enumerate(specs):
        begin, end = shard_rows(s["shape"][0], world, rank)
        local = expected_rows(s, i, begin, end - begin).contiguous()
        nbytes += local.numel() * local.element_size()
        sd[s["name"]] = DTensor.from_local(local, mesh, [Shard(0)], run_check=False)
    dist.barrier()
    t0 = time.perf_counter()
    dcp.save(sd, storage_writer=dcp.FileSystemWriter(ckpt))
    dist.barrier()
    save = time.perf_counter() - t0
    total = torch.tensor([nbytes], dtype=torch.int64)
    dist.all_reduce(total)
    if rank == 0:
        print(f"pytorch: {world} ranks saved their Shard(0) slices (dcp.save, FileSystemWriter defaults) "
              f"in {save:.2f} s", flush=True)
        result({"bytes": int(total.item()), "save": save})
    dist.barrier()
    dist.destroy_process_group()


def load4_worker(rank, world, specs, ckpt, reps, store):
    from torch.distributed.tensor import DTensor, Shard

    mesh = init_ranks(rank, world, store)
    locals_, starts, sd = [], [], {}
    for s in specs:
        begin, end = shard_rows(s["shape"][0], world, rank)
        local = torch.zeros([end - begin] + s["shape"][1:], dtype=DTYPES[s["dtype"]])
        locals_.append(local)
        starts.append(begin)
        sd[s["name"]] = DTensor.from_local(local, mesh, [Shard(0)], run_check=False)
    times = []
    for _ in range(reps):
        for t in locals_:
            t.zero_()
        dist.barrier()
        t0 = time.perf_counter()
        dcp.load(sd, checkpoint_id=ckpt)
        dist.barrier()
        mine = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        times.append(mine.item())
        check_rows(specs, locals_, starts, f"rank {rank} dcp.load")
    nbytes = sum(t.numel() * t.element_size() for t in locals_)
    sizes = [torch.tensor([nbytes], dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([nbytes], dtype=torch.int64))
    if rank == 0:
        result({"bytes": sum(int(x.item()) for x in sizes), "load": min(times), "reps": times})
    dist.barrier()
    dist.destroy_process_group()


def spawn(worker, args, world, ckpt):
    import torch.multiprocessing as mp

    fd, store = tempfile.mkstemp(prefix="dcp_load_store_", dir=os.path.dirname(os.path.abspath(ckpt)))
    os.close(fd)
    os.unlink(store)  # FileStore creates it
    try:
        mp.spawn(worker, args=(world,) + args + (store,), nprocs=world, join=True)
    finally:
        if os.path.exists(store):
            os.unlink(store)


def main():
    warnings.filterwarnings("ignore")
    mode, spec_path, ckpt = sys.argv[1:4]
    with open(spec_path) as f:
        specs = json.load(f)
    if mode == "write":
        torch.set_num_threads(1)
        cmd_write(specs, ckpt)
    elif mode == "load":
        cmd_load(specs, ckpt, int(sys.argv[4]), [int(t) for t in sys.argv[5].split(",")])
    elif mode == "write4":
        world = int(sys.argv[4])
        spawn(write4_worker, (specs, ckpt), world, ckpt)
    elif mode == "load4":
        reps, world = int(sys.argv[4]), int(sys.argv[5])
        spawn(load4_worker, (specs, ckpt, reps), world, ckpt)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
