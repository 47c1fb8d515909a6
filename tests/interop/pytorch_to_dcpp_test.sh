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

exit $fails
