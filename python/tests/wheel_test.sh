#!/bin/bash
# //python:wheel is a wheel pip accepts: installed (offline, --no-index) into a fresh venv that
# sees the torch it was built against, `import dcpp` comes from site-packages and round-trips a
# state dict.
set -euo pipefail
py=$(head -n1 "$TEST_SRCDIR/torch/python.txt" 2>/dev/null || true)
if [[ -z "$py" ]]; then
  echo "SKIP: LibTorch did not come from a Python install (no python in @torch//:python.txt)"
  exit 0
fi
whl=$(ls "$TEST_SRCDIR/$TEST_WORKSPACE"/python/dcpp-*.whl)
"$py" -m venv --system-site-packages "$TEST_TMPDIR/venv"
"$TEST_TMPDIR/venv/bin/pip" install --no-index --quiet "$whl"
cd "$TEST_TMPDIR"
unset PYTHONPATH
"$TEST_TMPDIR/venv/bin/python" -W ignore - <<'PY'
import os, torch, dcpp
assert dcpp.__file__.startswith(os.environ["TEST_TMPDIR"] + "/venv/"), dcpp.__file__
path = os.path.join(os.environ["TEST_TMPDIR"], "ckpt")
dcpp.save({"w": torch.arange(6.0), "meta": {"epoch": 3}}, path)
sd = {"w": torch.zeros(6), "meta": {"epoch": 0}}
dcpp.load(sd, path)
assert torch.equal(sd["w"], torch.arange(6.0)) and sd["meta"]["epoch"] == 3, sd
print("ok   wheel installs and round-trips")
PY
