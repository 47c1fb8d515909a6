#!/bin/bash
# bazel run -c opt //bench:py_save_load -- [--gib 2] [--worlds 1,4] ...: runs py_save_load.py
# with the Python whose torch LibTorch came from (@torch//:python.txt) and the dcpp package of
# this build on PYTHONPATH (its runfiles), from the folder `bazel run` was started in.
set -euo pipefail
runfiles="${RUNFILES_DIR:-$0.runfiles}/dcpp"
py=$(head -n1 "${RUNFILES_DIR:-$0.runfiles}/torch/python.txt" 2>/dev/null || true)
[[ -n "$py" ]] || { echo "py_save_load: LibTorch did not come from a Python install" >&2; exit 1; }
export PYTHONPATH="$runfiles/python${PYTHONPATH:+:$PYTHONPATH}"
export DCPP_CPP_TWIN="$runfiles/bench/cpp_twin"
cd "${BUILD_WORKING_DIRECTORY:-.}"
exec "$py" "$runfiles/bench/py_save_load.py" "$@"
