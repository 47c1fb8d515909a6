#!/usr/bin/env bash
# Builds the CUDA configuration here (no GPU needed) and bundles the GPU tests, the GPU
# benchmark (bench/gpu_save_load with its PyTorch DCP baseline script, in bench/) and the
# planners into gpu_bundle/ (git-ignored, a few MiB) for a machine that has a GPU and torch
# 2.11 but no Bazel. Prints the command that runs them there against that machine's own torch
# and NVIDIA libraries.
#
#   scripts/gpu_bundle.sh            # then run the printed command on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

tests=(tests/gpu/cuda_checkpoint_test tests/gpu/nccl_version_test core/storage/gds/gds_driver_test
       core/storage/gds/gds_file_test)
benches=(bench/gpu_save_load)
labels=()
for t in "${tests[@]}" "${benches[@]}"; do labels+=("//$(dirname "$t"):$(basename "$t")"); done
bazel build -c opt --config=cuda "${labels[@]}"
bin_dir=$(bazel info -c opt --config=cuda bazel-bin 2>/dev/null)

out=gpu_bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/bench" "$out/lib"
cp -r planners "$out/planners"
for t in "${tests[@]}"; do install -m 755 "$bin_dir/$t" "$out/bin/$(basename "$t")"; done
for t in "${benches[@]}"; do install -m 755 "$bin_dir/$t" "$out/bench/$(basename "$t")"; done
install -m 644 bench/gpu_dcp_baseline.py "$out/bench/"  # found by the path run.sh passes
for t in "${tests[@]}" "${benches[@]}"; do
  # Our own shared libraries (Bazel's _solib) and Debian's (LuaJIT, protobuf, xxhash, ...)
  # travel with the bundle; torch, CUDA, NCCL and the C/C++ runtime come from the GPU machine.
  ldd "$bin_dir/$t" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libtorch*|libc10*|libcuda*|libcudart*|libnccl*|libnv*|libcu*|libgomp*|\
      libc.so*|libm.so*|libdl.so*|librt.so*|libutil.so*|libpthread*|libgcc_s*|libstdc++*|ld-linux*) ;;
      *) cp -L -n "$lib" "$out/lib/" ;;
    esac
  done
done

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the bundled GPU tests, then the GPU benchmark (bench/gpu_save_load: ~8 GiB of CUDA
# tensors saved to and loaded from /dev/shm against pinned copies and PyTorch DCP, a few
# minutes), against this machine's torch ($DCPP_PYTHON, else python3: import torch).
#
#   bash run.sh                      # tests, then the benchmark
#   bash run.sh --no-bench           # tests only       (or DCPP_GPU_BUNDLE_BENCH=skip)
#   bash run.sh --bench-only [ARGS]  # benchmark only   (or DCPP_GPU_BUNDLE_BENCH=only)
# Further arguments go to the benchmark, e.g. --gib=4 --reps=2 --skip_dcp (--gib also from
# $DCPP_GPU_BENCH_GIB).
cd "$(dirname "$0")"
mode="${DCPP_GPU_BUNDLE_BENCH:-all}"
case "${1:-}" in
  --no-bench) mode=skip; shift ;;
  --bench-only) mode=only; shift ;;
esac
PY="${DCPP_PYTHON:-python3}"
TORCH_LIBS=$("$PY" -c 'import torch, os, glob
site = os.path.dirname(os.path.dirname(torch.__file__))
dirs = [os.path.join(os.path.dirname(torch.__file__), "lib")]
dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")) + glob.glob(os.path.join(site, "nvidia", "*", "*", "lib")))
print(":".join(dirs))')
export LD_LIBRARY_PATH="$PWD/lib:$TORCH_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TEST_TMPDIR="${TEST_TMPDIR:-/tmp}"
export DCPP_PYTHON="$PY"  # the benchmark's PyTorch DCP child
status=0
if [[ "$mode" != only ]]; then
  for t in bin/*; do
    echo "== $t"
    "$t" || status=1
  done
fi
if [[ "$mode" != skip ]]; then
  echo "== bench/gpu_save_load"
  bench/gpu_save_load "$PWD/bench/gpu_dcp_baseline.py" "$@" || status=1
fi
exit $status
RUN
chmod +x "$out/run.sh"
echo "bundle: $out ($(du -sh "$out" | cut -f1)); on the GPU machine, from the folder holding it:"
echo "  bash $out/run.sh     # tests, then the GPU benchmark; --no-bench or --bench-only [ARGS]"
