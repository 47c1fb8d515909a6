#!/usr/bin/env bash
# dcpp -> PyTorch: dcpp_make saves the seeds' MLP (+ an uneven bf16 tensor, a torch.save'd list
# and a raw blob) FSDP- and TP-sharded over 2 ranks in DCP's format (from one process, and TP
# from 2 real dcpp processes under torchrun), and natively (converted to DCP by
# //scripts:convert --format dcp with planners/fsdp_to_tp.lua); then
# torch.distributed.checkpoint.load on 2 gloo ranks reads each folder into DTensors Shard(0)
# and into a parallelize_module TP model, and finds every value (pytorch_load.py).
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"

for l in fsdp tp; do
  check "make-dcp-$l" 0 "^saved dcp $l over 2 ranks" -- "$here/dcpp_make" "$t/$l" --format dcp --layout $l --world 2
done
# The TP layout again, saved by 2 real dcpp ranks (one process each, gloo through the real
# torchrun): each writes its own file, the replicated net2.bias once, rank 0 commits.
check make-dcp-torchrun 0 '^saved dcp tp over 2 ranks (one process each)' -- env OMP_NUM_THREADS=1 \
  "$py" -m torch.distributed.run --standalone --nproc_per_node=2 --no-python \
  "$here/dcpp_make" "$t/ranks" --format dcp --layout tp
ls "$t/ranks"/__0_*.distcp "$t/ranks"/__1_*.distcp >/dev/null 2>&1 ||
  { echo "FAIL make-dcp-torchrun: want files of both ranks: $(ls "$t/ranks")"; fails=$((fails + 1)); }
check make-native 0 '^saved native fsdp' -- "$here/dcpp_make" "$t/native" --format native --layout fsdp --world 2
check convert-to-dcp 0 'to 2 ranks .* (dcp format)' -- "$root/scripts/convert" "$t/native" "$t/converted" \
  --planner planners/fsdp_to_tp.lua --world-size 2 --format dcp --quiet
before=$fails
check pytorch-loads 0 "loaded $t/converted: ok" -- "$py" "$here/pytorch_load.py" "$t/fsdp" "$t/tp" "$t/ranks" "$t/converted"
for d in fsdp tp ranks; do
  if [[ $fails == "$before" ]] && ! grep -q "^loaded $t/$d: ok$" <<<"$out"; then
    echo "FAIL pytorch-loads: no 'loaded $t/$d: ok' in: $out"
    fails=$((fails + 1))
  fi
done

exit $fails
