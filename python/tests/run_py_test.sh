#!/bin/bash
# run_py_test.sh SCRIPT: runs a Python test of the dcpp package with the Python whose torch
# LibTorch came from (@torch//:python.txt), the package taken from the runfiles (PYTHONPATH,
# as a trainer would use it without installing). Passes with SKIP when LibTorch did not come
# from a Python install.
set -euo pipefail
root="$TEST_SRCDIR/$TEST_WORKSPACE"
py=$(head -n1 "$TEST_SRCDIR/torch/python.txt" 2>/dev/null || true)
if [[ -z "$py" ]]; then
  echo "SKIP: LibTorch did not come from a Python install (no python in @torch//:python.txt)"
  exit 0
fi
export PYTHONPATH="$root/python:$root/python/tests"
export PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
export TMPDIR="$TEST_TMPDIR"
cd "$root"  # planners/ paths resolve as in the repository
exec "$py" -W ignore::UserWarning -W ignore::FutureWarning "$root/python/tests/$1"
