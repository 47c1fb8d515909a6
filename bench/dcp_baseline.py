"""PyTorch DCP baseline for //bench:save_load.

    python3 dcp_baseline.py SPEC_JSON DIR REPS THREAD_COUNTS

SPEC_JSON lists the tensors ([{"name", "dtype", "shape"}, ...]) that save_load.cc builds.
This script builds the same tensors (same shapes, dtypes and content), then times, best of REPS,
torch.distributed.checkpoint.save into DIR with FileSystemWriter(thread_count=T) for each T in
THREAD_COUNTS (comma-separated; DIR is emptied before each save, outside the timing), and
torch.distributed.checkpoint.load in place into preallocated tensors. Single process, no
process group (no_dist=True). DCP's best configuration is the caller's to pick from the save
timings (the smallest over THREAD_COUNTS); FileSystemReader's constructor options are printed
(in torch 2.11 it takes only the path and an extension registry, so load has one configuration). The last stdout line is
    DCP_RESULT {"save": {"T": seconds, ...}, "load": seconds, "bytes": total}
DIR is removed at the end.
"""
import inspect
import json
import os
import shutil
import sys
import time
import warnings

import torch
import torch.distributed.checkpoint as dcp

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def generate(spec, i):
    """The content save_load.cc gives tensor i: frac(k * golden + i * 0.37), k = element."""
    numel = 1
    for d in spec["shape"]:
        numel *= d
    t = torch.arange(numel, dtype=torch.float32).mul_(0.6180339887).add_(0.37 * i).frac_()
    return t.to(DTYPES[spec["dtype"]]).reshape(spec["shape"]).contiguous()


def best_of(reps, fn, before=None):
    best = float("inf")
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    spec_path, ckpt, reps, thread_counts = sys.argv[1:5]
    reps = int(reps)
    thread_counts = [int(t) for t in thread_counts.split(",")]
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    with open(spec_path) as f:
        specs = json.load(f)

    src = {s["name"]: generate(s, i) for i, s in enumerate(specs)}
    dst = {k: torch.zeros_like(v) for k, v in src.items()}
    nbytes = sum(t.numel() * t.element_size() for t in src.values())
    print(f"dcp_baseline: torch {torch.__version__}, {len(src)} tensors, {nbytes / 2**20:.0f} MiB",
          flush=True)

    reader_opts = [p for p in inspect.signature(dcp.FileSystemReader.__init__).parameters
                   if p not in ("self", "path")]
    print(f"dcp FileSystemReader options besides the path: {reader_opts or 'none'} "
          f"(load runs with the defaults)", flush=True)

    def fresh():
        shutil.rmtree(ckpt, ignore_errors=True)

    save = {}
    for t in thread_counts:
        writer = lambda: dcp.FileSystemWriter(ckpt, thread_count=t)  # noqa: E731
        save[str(t)] = best_of(reps, lambda: dcp.save(src, storage_writer=writer(), no_dist=True), fresh)
        print(f"dcp save thread_count={t}: {save[str(t)]:.3f} s", flush=True)

    load = best_of(reps, lambda: dcp.load(dst, checkpoint_id=ckpt, no_dist=True))
    print(f"dcp load: {load:.3f} s", flush=True)
    for k, v in src.items():
        if not torch.equal(v, dst[k]):
            raise SystemExit(f"DCP load gave wrong data for {k}")
    shutil.rmtree(ckpt, ignore_errors=True)
    print("DCP_RESULT " + json.dumps({"save": save, "load": load, "bytes": nbytes}), flush=True)


if __name__ == "__main__":
    main()
