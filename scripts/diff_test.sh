#!/usr/bin/env bash
# scripts/diff on the demo's checkpoints (the seed MLP FSDP-sharded over 2 ranks, and the same
# converted to TP over 2): equal by value across layouts, a flipped byte, exit codes.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/scripts/testing/check.sh"
bin="$TEST_SRCDIR/$TEST_WORKSPACE/scripts"
d="$TEST_TMPDIR/d"
"$bin/convert" --demo --out "$d" >/dev/null || { echo "FAIL: convert --demo"; exit 1; }

# Same values in two layouts.
check fsdp-vs-tp 0 '^4 keys compared, 1384 bytes: identical$' -- "$bin/diff" "$d/fsdp" "$d/tp"
[[ $(wc -l <<<"$out") == 1 ]] || { echo "FAIL fsdp-vs-tp prints more than the summary"; fails=$((fails + 1)); }
check atol 0 'identical' -- "$bin/diff" "$d/tp" "$d/fsdp" --atol 1e-6 --quiet
check small-budget 0 'identical' -- "$bin/diff" "$d/fsdp" "$d/tp" --memory-budget 1K

# A flipped byte inside a data file of a copy: a checksum error naming the key (exit 1); with
# --no-verify, a value difference in that key.
cp -r "$d/tp" "$d/flipped"
file=$(ls "$d/flipped"/*.distcp | head -n1)
python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(5); b = f.read(1); f.seek(5); f.write(bytes([b[0] ^ 0x10]))
' "$file"
check no-verify 1 '^net[12]\.\(weight\|bias\): 1 of [0-9]* elements differs (max |a-b| .*, first at \[' -- \
  "$bin/diff" "$d/fsdp" "$d/flipped" --no-verify
key=$(sed -n 's/^\(net[12]\.[a-z]*\): .*/\1/p' <<<"$out" | head -n1)
check no-verify-summary 1 '^1 key differs; 4 keys compared' -- "$bin/diff" "$d/fsdp" "$d/flipped" --no-verify --quiet
check flipped 1 "diff: error: checksum mismatch for key '$key' chunk .* in $d/flipped/$(basename "$file")" -- \
  "$bin/diff" "$d/fsdp" "$d/flipped"

# Problems (1) and bad command lines (2).
check missing-folder 1 "no checkpoint folder $d/none" -- "$bin/diff" "$d/fsdp" "$d/none"
mkdir -p "$d/empty"
check no-metadata 1 "no checkpoint in $d/empty" -- "$bin/diff" "$d/empty" "$d/fsdp"
check budget-too-small 1 'raise the memory budget' -- "$bin/diff" "$d/fsdp" "$d/tp" --memory-budget 16
check no-args 2 'A is required' -- "$bin/diff"
check one-arg 2 'B is required' -- "$bin/diff" "$d/fsdp"
check bad-atol 2 'atol' -- "$bin/diff" "$d/fsdp" "$d/tp" --atol abc
check negative-atol 2 'atol' -- "$bin/diff" "$d/fsdp" "$d/tp" --atol -1
check nan-atol 2 'atol' -- "$bin/diff" "$d/fsdp" "$d/tp" --atol nan
check bad-budget 2 'cannot read' -- "$bin/diff" "$d/fsdp" "$d/tp" --memory-budget lots
check help 0 'Compare two dcpp checkpoints' -- "$bin/diff" --help

if ((fails)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all diff checks passed"
