"""PyTorch DCP baseline for //bench:gpu_save_load: torch.distributed.checkpoint on CUDA tensors.

    python3 gpu_dcp_baseline.py [--device cuda|cpu] SPEC_JSON DIR REPS THREAD_COUNTS

SPEC_JSON lists the tensors ([{"name", "dtype", "shape"}, ...]) that gpu_save_load.cc builds.
This script makes tensors of the same shapes and dtypes on the device (random values), then
times, best of REPS:
  - torch.distributed.checkpoint.save of them into DIR with FileSystemWriter(thread_count=T)
    for each T in THREAD_COUNTS (comma-separated); DIR is emptied before each save, untimed;
  - torch.distributed.checkpoint.load in place into preallocated tensors on the device
    (zeroed before each load, untimed; every tensor checked after the first load).
Single process, no process group (no_dist=True). Every timing starts and ends with a device
synchronisation. The last stdout line is
    GPU_DCP_RESULT {"save": {"T": seconds, ...}, "load": seconds, "bytes": total}
DIR is removed at the end. --device cpu runs the same on CPU tensors (a dry run of the flow
on a machine without a GPU; the figures then say nothing about GPUs).
Exit status 2 when the device is not available.
"""
import argparse
import json
import shutil
import sys
import time
import warnings

DTYPES = ("float32", "bfloat16")  # what WriteSpecJson (bench/bench_util.h) writes


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("spec_json", help="the tensors: [{name, dtype, shape}, ...]")
    ap.add_argument("dir", help="checkpoint folder (emptied before each save, removed at the end)")
    ap.add_argument("reps", type=int, help="best of this many runs of each")
    ap.add_argument("thread_counts", help="FileSystemWriter thread counts, comma-separated, e.g. 1,2")
    args = ap.parse_args()

    import torch
    import torch.distributed.checkpoint as dcp

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_dcp_baseline: no CUDA device (torch {torch.__version__}: torch.cuda.is_available() "
              "is False); nothing measured", file=sys.stderr, flush=True)
        return 2
    warnings.filterwarnings("ignore")
    dev = torch.device(args.device)
    thread_counts = [int(t) for t in args.thread_counts.split(",")]
    reps = max(1, args.reps)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with open(args.spec_json) as f:
        specs = json.load(f)
    src = {}
    for s in specs:
        if s["dtype"] not in DTYPES:
            raise SystemExit(f"gpu_dcp_baseline: unexpected dtype {s['dtype']!r} for {s['name']}")
        src[s["name"]] = torch.rand(s["shape"], device=dev).to(getattr(torch, s["dtype"]))
    dst = {k: torch.zeros_like(v) for k, v in src.items()}
    sync()
    nbytes = sum(t.numel() * t.element_size() for t in src.values())
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"gpu_dcp_baseline: torch {torch.__version__}, {len(src)} tensors, {nbytes / 2**20:.0f} MiB "
          f"on {where}", flush=True)

    def best_of(fn, before=None):
        best = float("inf")
        for _ in range(reps):
            if before is not None:
                before()
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        return best

    def fresh():
        shutil.rmtree(args.dir, ignore_errors=True)

    try:
        save = {}
        for t in thread_counts:
            def one_save(t=t):
                dcp.save(src, storage_writer=dcp.FileSystemWriter(args.dir, thread_count=t), no_dist=True)
            save[str(t)] = best_of(one_save, fresh)
            print(f"dcp save thread_count={t}: {save[str(t)]:.3f} s "
                  f"{nbytes / save[str(t)] / 1e9:.2f} GB/s", flush=True)

        checked = []

        def zero():
            for v in dst.values():
                v.zero_()

        def one_load():
            dcp.load(dst, checkpoint_id=args.dir, no_dist=True)
            if not checked:
                sync()
                for k, v in src.items():
                    if not torch.equal(v, dst[k]):
                        raise SystemExit(f"gpu_dcp_baseline: DCP load gave wrong data for {k}")
                checked.append(True)

        # The first load is checked, inside its timing: run it once untimed first.
        zero()
        one_load()
        load = best_of(one_load, zero)
        print(f"dcp load: {load:.3f} s {nbytes / load / 1e9:.2f} GB/s "
              "(FileSystemReader is single-threaded)", flush=True)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    print("GPU_DCP_RESULT " + json.dumps({"save": save, "load": load, "bytes": nbytes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
