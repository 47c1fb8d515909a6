#!/usr/bin/env bash
# PyTorch -> dcpp: real torch.distributed.checkpoint saves on 2 gloo ranks (pytorch_save.py:
# FSDP2 fully_shard MLP + Adam state via get_state_dict, objects, bf16/f16/int64 DTensors with
# uneven and empty shards, a 0-d tensor, a transposed tensor; and a parallelize_module TP MLP
# + Adam saved with 2 writer threads). dcpp reads each folder (dcpp_dump: OpenReader, metadata,
# load whole) and every tensor and object must equal what PyTorch had (compare_dump.py). The
# FSDP folder also goes through inspect, verify and convert (to 3 ranks, native format).
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"

check pytorch-saves 0 '^saved ' -- "$py" "$here/pytorch_save.py" "$t/ckpt" "$t/ref"
for c in fsdp tp; do
  check "dcpp-loads-$c" 0 '^dumped [1-9][0-9]* tensors, [1-9][0-9]* bytes entries$' -- \
    "$here/dcpp_dump" "$t/ckpt/$c" "$t/dump/$c"
done
check inspect 0 'extra.transposed  *float32  *\[4, 3\]' -- "$root/scripts/inspect" "$t/ckpt/fsdp"
check verify 0 '^verified: .* no problems$' -- "$root/scripts/verify" "$t/ckpt/fsdp"
grep -q '^checked the CRC-32 of [1-9][0-9]* archive entries' <<<"$out" || { echo "FAIL verify did not check the archives' CRC-32: $out"; fails=$((fails + 1)); }
check convert-to-native 0 'from 2 to 3 ranks' -- "$root/scripts/convert" "$t/ckpt/fsdp" "$t/native3" \
  --planner planners/to_fsdp.lua --world-size 3 --format native --quiet
check dcpp-loads-converted 0 '^dumped ' -- "$here/dcpp_dump" "$t/native3" "$t/dump/native3"

# Every key equal, in all three; and the comparison itself catches a wrong value (the
# optimizer's exp_avg has net1.weight's shape).
before=$fails
check values-equal 0 "dump/tp: compared [0-9]* tensors, [0-9]* objects: equal" -- \
  "$py" "$here/compare_dump.py" "$t/dump/fsdp" "$t/ref/fsdp" "$t/dump/tp" "$t/ref/tp" "$t/dump/native3" "$t/ref/fsdp"
if [[ $fails == "$before" ]] && ! { grep -q 'dump/fsdp: compared' <<<"$out" && grep -q 'dump/native3: compared' <<<"$out"; }; then
  echo "FAIL values-equal did not compare every folder: $out"
  fails=$((fails + 1))
fi
cp -r "$t/dump/fsdp" "$t/wrong"
cp "$t/ref/fsdp/optim.state.net1.weight.exp_avg.pt" "$t/wrong/model.net1.weight.pt"
check compare-catches-difference 1 'model.net1.weight: values differ' -- \
  "$py" "$here/compare_dump.py" "$t/wrong" "$t/ref/fsdp"

# Any key PyTorch takes: "" ({"": t}), " ", "a b", unicode, and "" nested ({"x": {"": t}} is
# "x."). PyTorch saves them (one process); dcpp inspects, verifies, converts them to 2 ranks
# in DCP's format and diffs the two; PyTorch loads the conversion and gets every value back.
odd_py='
import sys, warnings, torch
import torch.distributed.checkpoint as dcp
warnings.filterwarnings("ignore")
def sd(fill):
    g = torch.Generator().manual_seed(3)
    t = lambda *s: torch.rand(*s, generator=g) if fill else torch.zeros(*s)
    return {"": t(4, 3), " ": t(4), "a b": t(2, 5), "\u00fcn\u00ef": t(6), "x": {"": t(3, 2)}}
if sys.argv[1] == "save":
    dcp.save(sd(True), checkpoint_id=sys.argv[2], no_dist=True)
    print("saved odd keys")
else:
    got, want = sd(False), sd(True)
    dcp.load(got, checkpoint_id=sys.argv[2], no_dist=True)
    flat = lambda d, p="": [(p + k, v) for k, v in d.items() if not isinstance(v, dict)] + \
        [kv for k, v in d.items() if isinstance(v, dict) for kv in flat(v, p + k + ".")]
    for (k, a), (_, b) in zip(flat(got), flat(want)):
        assert torch.equal(a, b), repr(k)
    print("loaded odd keys:", sorted(k for k, _ in flat(got)))
'
check pytorch-saves-odd-keys 0 '^saved odd keys' -- "$py" -c "$odd_py" save "$t/odd"
check inspect-odd-keys 0 '^  ""  *float32  *\[4, 3\]' -- "$root/scripts/inspect" "$t/odd"
grep -q '^  "x\."  *float32\|^  x\.  *float32' <<<"$out" || { echo "FAIL inspect-odd-keys: no x.: $out"; fails=$((fails + 1)); }
check verify-odd-keys 0 '^verified: 5 tensors, .* no problems$' -- "$root/scripts/verify" "$t/odd"
check convert-odd-keys 0 'converted 5 keys' -- "$root/scripts/convert" "$t/odd" "$t/odd2" \
  --planner planners/to_fsdp.lua --world-size 2 --format dcp --quiet
check diff-odd-keys 0 'identical$' -- "$root/scripts/diff" "$t/odd" "$t/odd2"
check pytorch-loads-odd-keys 0 "^loaded odd keys: \['', ' ', 'a b', 'x\.', " -- "$py" -c "$odd_py" load "$t/odd2"

exit $fails
