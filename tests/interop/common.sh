# Sourced first by every interop sh_test: check() (scripts/testing/check.sh), the runfiles
# root, this folder, the test's scratch folder, and $py, the Python whose torch LibTorch came
# from (the test passes with SKIP when LibTorch did not come from a Python install).
source "$TEST_SRCDIR/$TEST_WORKSPACE/scripts/testing/check.sh"
root="$TEST_SRCDIR/$TEST_WORKSPACE"
here="$root/tests/interop"
t="$TEST_TMPDIR"
export PYTHONDONTWRITEBYTECODE=1

py=$(head -n1 "$TEST_SRCDIR/torch/python.txt" 2>/dev/null || true)
if [[ -z "$py" ]]; then
  echo "SKIP: LibTorch did not come from a Python install (no python in @torch//:python.txt)"
  exit 0
fi
