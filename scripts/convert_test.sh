#!/usr/bin/env bash
# The convert command line: the README's demo, conversions, exit codes and bad input.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/scripts/testing/check.sh"
bin="$TEST_SRCDIR/$TEST_WORKSPACE/scripts/convert"
t="$TEST_TMPDIR"

# The demo: the README's first command.
check demo 0 '^verified: FSDP(2) -> TP(2)' -- "$bin" --demo --out "$t/d"
check demo-table 0 'net2.weight  *Shard(0)@\[2\]  *Shard(1)@\[2\]' -- "$bin" --demo --out "$t/d"
test -f "$t/d/fsdp/.metadata" && test -f "$t/d/tp/.metadata" || { echo "FAIL demo left no folders"; fails=$((fails + 1)); }

# A conversion, then the same destination again: refused without --overwrite, untouched.
check convert 0 'converted 4 keys' -- "$bin" "$t/d/fsdp" "$t/tp" --planner planners/fsdp_to_tp.lua --world-size 2
before=$(cd "$t/tp" && ls -a | sort && cat .metadata | md5sum)
check refuse-existing 1 'already holds a checkpoint; pass --overwrite' -- "$bin" "$t/d/fsdp" "$t/tp"
after=$(cd "$t/tp" && ls -a | sort && cat .metadata | md5sum)
[[ "$before" == "$after" ]] || { echo "FAIL refused conversion changed DST"; fails=$((fails + 1)); }
check overwrite 0 'converted 4 keys' -- "$bin" "$t/d/fsdp" "$t/tp" --overwrite --quiet
check back-to-fsdp3 0 'from 2 to 3 ranks' -- "$bin" "$t/tp" "$t/f3" --planner planners/to_fsdp.lua --world-size 3
# Under `bazel run` started outside the repository (no planners/ folder there), the embedded
# planners are still found by name.
mkdir -p "$t/elsewhere"
check embedded-by-name 0 'from 2 to 3 ranks' -- env BUILD_WORKING_DIRECTORY="$t/elsewhere" \
  "$bin" "$t/tp" "$t/f3b" --planner planners/to_fsdp.lua --world-size 3
check embedded-short-name 0 'from 2 to 3 ranks' -- env BUILD_WORKING_DIRECTORY="$t/elsewhere" \
  "$bin" "$t/tp" "$t/f3c" --planner to_fsdp --world-size 3
check set-option 0 'net2.weight *Shard(0)@\[2\] *Shard(0)@\[2\]' -- "$bin" "$t/d/fsdp" "$t/col" --set colwise=net1,net2
check budget 0 'converted' -- "$bin" "$t/d/fsdp" "$t/small" --memory-budget 16K

# Optimizer state follows its parameter under PyTorch's usual nesting,
# dcp.save({"model": model_sd, "optim": optim_sd}): the moments of model.attention.wk.weight
# (column-wise) are split like it, its scalar step stays whole. The source is a safetensors
# file with those keys.
python3 - "$t/nested.safetensors" <<'PY'
import json, struct, sys
shapes = {"model.attention.wk.weight": [24, 16], "model.attention.wo.weight": [16, 24],
          "optim.state.attention.wk.weight.exp_avg": [24, 16],
          "optim.state.attention.wk.weight.exp_avg_sq": [24, 16],
          "optim.state.attention.wk.weight.step": [],
          "optim.state.attention.wo.weight.exp_avg": [16, 24]}
header, data = {}, b""
for i, (key, shape) in enumerate(sorted(shapes.items())):
    n = 1
    for s in shape: n *= s
    header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + 4 * n]}
    data += struct.pack(f"<{n}f", *[i + k / 1000 for k in range(n)])
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
check nested-optim 0 'optim.state.attention.wk.weight.exp_avg  *[^ ]*  *Shard(0)@\[2\] ' -- \
  "$bin" "$t/nested.safetensors" "$t/nested" --planner planners/fsdp_to_tp.lua --world-size 2
for want in 'model.attention.wk.weight  *[^ ]*  *Shard(0)@\[2\] ' 'optim.state.attention.wk.weight.exp_avg_sq  *[^ ]*  *Shard(0)@\[2\] ' \
            'optim.state.attention.wk.weight.step  *[^ ]*  *Replicate()@\[2\] ' 'model.attention.wo.weight  *[^ ]*  *Shard(1)@\[2\] ' \
            'optim.state.attention.wo.weight.exp_avg  *[^ ]*  *Shard(1)@\[2\] '; do
  grep -q "$want" <<<"$out" || { echo "FAIL nested-optim: no line $want in: $out"; fails=$((fails + 1)); }
done
# What was written: the moments in the same two chunks as their parameter, the step in one.
"$(dirname "$bin")/inspect" "$t/nested" --json | python3 -c '
import json, sys
got = {t["key"]: sorted(c["offsets"] for c in t["chunks"]) for t in json.load(sys.stdin)["tensors"]}
want = {"model.attention.wk.weight": [[0, 0], [12, 0]],
        "optim.state.attention.wk.weight.exp_avg": [[0, 0], [12, 0]],
        "optim.state.attention.wk.weight.exp_avg_sq": [[0, 0], [12, 0]],
        "optim.state.attention.wk.weight.step": [[]],
        "model.attention.wo.weight": [[0, 0], [0, 12]],
        "optim.state.attention.wo.weight.exp_avg": [[0, 0], [0, 12]]}
for k, v in want.items():
    if got.get(k) != v: sys.exit(f"{k}: chunks at {got.get(k)}, want {v}")
print("ok   nested-optim chunks")
' || { echo "FAIL nested-optim: the chunks written"; fails=$((fails + 1)); }

# The planner in the README's "Write your own planner" guide works as documented.
awk '/^### Write your own planner/{f=1} f&&/^```lua/{p=1;next} p&&/^```/{exit} p' \
  "$TEST_SRCDIR/$TEST_WORKSPACE/README.md" >"$t/readme_planner.lua"
check readme-planner 0 'net2.weight *Shard(0)@\[2\] *Shard(1)@\[4\]' -- \
  "$bin" "$t/d/fsdp" "$t/readme" --planner "$t/readme_planner.lua" --world-size 4 --set prefix=net.

# Bad input: conversion errors (1) name the problem and leave no checkpoint behind.
check missing-src 1 "$t/nothing" -- "$bin" "$t/nothing" "$t/x1"
cp -r "$t/d/fsdp" "$t/bad"
file=$(ls "$t/bad" | grep distcp | head -1)
python3 - "$t/bad/$file" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[10] ^= 0xff
open(p, 'wb').write(b)
PY
check corrupt-src 1 'checksum mismatch for key' -- "$bin" "$t/bad" "$t/x2"
[[ ! -e "$t/x2/.metadata" ]] || { echo "FAIL corrupt source left a checkpoint"; fails=$((fails + 1)); }
printf 'local P = {}\nfunction P.convert(ctx, md)\n  error("boom")\nend\nreturn P\n' >"$t/boom.lua"
check planner-error 1 'boom.lua:3: boom' -- "$bin" "$t/d/fsdp" "$t/x3" --planner "$t/boom.lua"
printf 'local P = {}\nfunction P.convert(ctx, md)\n  return {{key = "net1.bias", layout = "Shard(5)"}}\nend\nreturn P\n' >"$t/bad_layout.lua"
check impossible-layout 1 "key 'net1.bias' gets Shard(5)" -- "$bin" "$t/d/fsdp" "$t/x4" --planner "$t/bad_layout.lua"
printf 'local P = {}\nfunction P.convert(ctx, md)\n  return {{key = "net1.bias", layout = "Shard(99999999999999999999)"}}\nend\nreturn P\n' >"$t/huge_dim.lua"
check overflowing-layout 1 "'Shard(99999999999999999999)': the dimension 99999999999999999999 is out of range" -- "$bin" "$t/d/fsdp" "$t/x12" --planner "$t/huge_dim.lua"
printf 'local P = {\n' >"$t/syntax.lua"
check planner-syntax 1 'syntax.lua' -- "$bin" "$t/d/fsdp" "$t/x5" --planner "$t/syntax.lua"
check no-planner 1 'cannot read planner script' -- "$bin" "$t/d/fsdp" "$t/x6" --planner "$t/none.lua"

# Planners that never finish are stopped at their limits (exit 1, DST untouched); a raised
# limit lets a heavy but finite planner through.
printf 'local P = {}\nfunction P.convert(ctx, md)\n  while true do end\nend\nreturn P\n' >"$t/spin.lua"
check planner-loop 1 'spin.lua:3: exceeded the instruction limit of 1000000' -- \
  "$bin" "$t/d/fsdp" "$t/x11" --planner "$t/spin.lua" --planner-instruction-limit 1000000
printf 'local P = {}\nfunction P.convert(ctx, md)\n  local t = {}\n  while true do t[#t + 1] = string.rep("x", 1e6) .. #t end\nend\nreturn P\n' >"$t/bomb.lua"
check planner-bomb 1 'bomb.lua: exceeded the memory limit of 67108864 bytes' -- \
  "$bin" "$t/d/fsdp" "$t/x12" --planner "$t/bomb.lua" --planner-memory-limit 64M
[[ ! -e "$t/x11/.metadata" && ! -e "$t/x12/.metadata" ]] || { echo "FAIL a stopped planner left a checkpoint"; fails=$((fails + 1)); }
cat >"$t/heavy.lua" <<'LUA'
local P = {}
function P.convert(ctx, md)
  local s = 0
  for i = 1, 2e6 do s = s + i end
  local entries = {}
  for _, k in ipairs(dcpp.sorted_keys(md.tensors)) do
    entries[#entries + 1] = {key = k, source = k, layout = "Replicate()"}
  end
  return entries
end
return P
LUA
check heavy-limited 1 'heavy.lua:4: exceeded the instruction limit of 1000000' -- \
  "$bin" "$t/d/fsdp" "$t/x13" --planner "$t/heavy.lua" --planner-instruction-limit 1000000
check heavy-raised 0 'converted 4 keys' -- \
  "$bin" "$t/d/fsdp" "$t/x14" --planner "$t/heavy.lua" --planner-instruction-limit 50000000
check heavy-unlimited 0 'converted 4 keys' -- \
  "$bin" "$t/d/fsdp" "$t/x15" --planner "$t/heavy.lua" --planner-instruction-limit 0 --planner-memory-limit 0

# Usage errors (2).
check no-args 2 'SRC and DST are required' -- "$bin"
check unknown-set 2 "has no option 'nope'" -- "$bin" "$t/d/fsdp" "$t/x7" --set nope=1
check bad-set 2 'expected key=value' -- "$bin" "$t/d/fsdp" "$t/x8" --set colwise
check bad-budget 2 'as a size' -- "$bin" "$t/d/fsdp" "$t/x9" --memory-budget lots
check bad-planner-memory 2 'as a size' -- "$bin" "$t/d/fsdp" "$t/x9" --planner-memory-limit lots
check bad-planner-limit 2 'planner-instruction-limit' -- "$bin" "$t/d/fsdp" "$t/x9" --planner-instruction-limit -5
check tiny-budget 2 'memory-budget 4K: the budget must be at least 8192 bytes' -- "$bin" "$t/d/fsdp" "$t/x16" --memory-budget 4K
[[ ! -e "$t/x16/.metadata" ]] || { echo "FAIL a refused budget left a checkpoint"; fails=$((fails + 1)); }
check huge-budget 2 "cannot read '1e30G' as a positive size" -- "$bin" "$t/d/fsdp" "$t/x11" --memory-budget 1e30G
check bad-world 2 'world-size' -- "$bin" "$t/d/fsdp" "$t/x10" --world-size 0
check unknown-flag 2 'frobnicate' -- "$bin" --frobnicate

exit $fails
