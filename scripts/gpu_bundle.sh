#!/usr/bin/env bash
# Builds the CUDA configuration here (no GPU needed) and bundles the GPU tests and the
# planners into gpu_bundle/ (git-ignored, a few MiB) for a machine that has a GPU and torch
# 2.11 but no Bazel. Prints the command that runs them there against that machine's own torch
# and NVIDIA libraries.
#
#   scripts/gpu_bundle.sh            # then run the printed command on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

tests=(tests/gpu/cuda_checkpoint_test tests/gpu/nccl_version_test)
labels=()
for t in "${tests[@]}"; do labels+=("//$(dirname "$t"):$(basename "$t")"); done
bazel build -c opt --config=cuda "${labels[@]}"
bin_dir=$(bazel info -c opt --config=cuda bazel-bin 2>/dev/null)

out=gpu_bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp -r planners "$out/planners"
for t in "${tests[@]}"; do
  install -m 755 "$bin_dir/$t" "$out/bin/$(basename "$t")"
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
# Runs the bundled GPU tests against this machine's torch (python3 -c 'import torch').
cd "$(dirname "$0")"
TORCH_LIBS=$(python3 -c 'import torch, os, glob
site = os.path.dirname(os.path.dirname(torch.__file__))
dirs = [os.path.join(os.path.dirname(torch.__file__), "lib")]
dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")) + glob.glob(os.path.join(site, "nvidia", "*", "*", "lib")))
print(":".join(dirs))')
export LD_LIBRARY_PATH="$PWD/lib:$TORCH_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TEST_TMPDIR="${TEST_TMPDIR:-/tmp}"
status=0
for t in bin/*; do
  echo "== $t"
  "$t" || status=1
done
exit $status
RUN
chmod +x "$out/run.sh"
echo "bundle: $out ($(du -sh "$out" | cut -f1)); on the GPU machine, from the folder holding it:"
echo "  bash $out/run.sh"
