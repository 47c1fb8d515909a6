#!/usr/bin/env bash
# The README's first command must work: the demo verifies its own conversion.
set -euo pipefail
out=$("$TEST_SRCDIR/$TEST_WORKSPACE/scripts/demo" --out "$TEST_TMPDIR/d")
echo "$out"
grep -q '^verified: FSDP(2) -> TP(2)' <<<"$out"
test -f "$TEST_TMPDIR/d/fsdp/.metadata"
test -f "$TEST_TMPDIR/d/tp/.metadata"
