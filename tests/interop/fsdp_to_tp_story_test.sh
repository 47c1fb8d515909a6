#!/usr/bin/env bash
# The headline story, PyTorch at both ends: 2 gloo ranks save an FSDP2-sharded MLP and its Adam
# state with torch.distributed.checkpoint; dcpp's `convert --planner planners/fsdp_to_tp.lua
# --world-size 2 --format dcp` reshards it offline into tensor parallel (net1 column-wise, net2
# row-wise), still in DCP's format; inspect, verify and diff accept the result; and 2 gloo
# ranks load it with torch.distributed.checkpoint into a parallelize_module TP model and
# optimizer whose every parameter, moment, step and param_groups value equals the original.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"

check pytorch-saves-fsdp 0 '^saved FSDP(2) checkpoint' -- "$py" "$here/fsdp_to_tp.py" save "$t/fsdp" "$t/ref"
check convert 0 'converted [0-9]* keys .* from 2 to 2 ranks .* (dcp format)' -- "$root/scripts/convert" \
  "$t/fsdp" "$t/tp" --planner planners/fsdp_to_tp.lua --world-size 2 --format dcp
grep -q 'net2.weight  *Shard(0)@\[2\]  *Shard(1)@\[2\]' <<<"$out" ||
  { echo "FAIL convert did not plan net2.weight row-wise: $out"; fails=$((fails + 1)); }
check inspect 0 'net1.weight  *float32  *\[16, 10\]' -- "$root/scripts/inspect" "$t/tp"
check verify 0 '^verified: .* no problems$' -- "$root/scripts/verify" "$t/tp"
grep -q '^checked the CRC-32 of [1-9][0-9]* archive entries' <<<"$out" || { echo "FAIL verify did not check the archives' CRC-32: $out"; fails=$((fails + 1)); }
check diff 0 'identical$' -- "$root/scripts/diff" "$t/fsdp" "$t/tp"
# PyTorch's dcp_to_torch_save rebuilds the nesting from the key paths in .metadata: the
# converted checkpoint must give the same structure as PyTorch's own.
check same-nesting 0 '^same nesting: ' -- "$py" -c '
import sys, warnings, torch
warnings.filterwarnings("ignore")
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
def shape(o):
    if isinstance(o, dict): return {k: shape(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return [shape(v) for v in o]
    return type(o).__name__
got = []
for src in sys.argv[1:3]:
    dcp_to_torch_save(src, src + ".pt")
    got.append(shape(torch.load(src + ".pt", weights_only=False)))
if got[0] != got[1]:
    sys.exit(f"nesting differs:\n{got[0]}\n{got[1]}")
print("same nesting:", sorted(got[0]))
' "$t/fsdp" "$t/tp"
check pytorch-loads-tp 0 '^TP(2) model loaded from .*: [0-9]* keys equal the FSDP original$' -- \
  "$py" "$here/fsdp_to_tp.py" load "$t/tp" "$t/ref"

# The same under PyTorch's other usual nesting, dcp.save({"model": ..., "optim": ...}): the
# parameters are model.<fqn>, their state optim.state.<fqn>.<name>, and the moments must still
# be sharded like their parameter (the load checks the chunks in DST's metadata).
check pytorch-saves-nested 0 '^saved FSDP(2) checkpoint' -- "$py" "$here/fsdp_to_tp.py" save-nested "$t/fsdp_n" "$t/ref_n"
check convert-nested 0 'optim.state.net1.weight.exp_avg  *[^ ]*  *Shard(0)@\[2\] ' -- "$root/scripts/convert" \
  "$t/fsdp_n" "$t/tp_n" --planner planners/fsdp_to_tp.lua --world-size 2 --format dcp --list
grep -q 'optim.state.net2.weight.exp_avg_sq  *[^ ]*  *Shard(1)@\[2\] ' <<<"$out" ||
  { echo "FAIL convert-nested did not shard net2's moments row-wise: $out"; fails=$((fails + 1)); }
check pytorch-loads-nested 0 '^TP(2) model loaded from .*: [0-9]* keys equal the FSDP original$' -- \
  "$py" "$here/fsdp_to_tp.py" load-nested "$t/tp_n" "$t/ref_n"

exit $fails
