#!/usr/bin/env bash
# PyTorch's compressed and safetensors-serialized DCP <-> dcpp. Real torch.distributed.checkpoint
# saves on 2 gloo ranks (pytorch_save_zstd.py): with _extensions=[ZStandard()] (every item a
# zstd stream), with serialization_format=SAFETENSORS, and with HuggingFaceStorageWriter
# (save_distributed: one safetensors file per rank, DCP_SHARDING_INFO in __metadata__, no
# .metadata). dcpp reads each (dcpp_dump: every value equal to what PyTorch held), inspects,
# verifies, diffs and converts them; convert --format dcp --compress zstd writes compressed DCP that
# PyTorch's dcp.load reads back equal; corrupt compressed data fails naming key and file.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"

check pytorch-saves 0 '^saved zstd, st, hf$' -- "$py" "$here/pytorch_save_zstd.py" "$t/ckpt" "$t/ref"
for c in zstd st hf; do
  check "dcpp-loads-$c" 0 '^dumped [1-9][0-9]* tensors, [0-9]* bytes entries$' -- \
    "$here/dcpp_dump" "$t/ckpt/$c" "$t/dump/$c"
done
before=$fails
check values-equal 0 "dump/hf: compared 8 tensors, 0 objects: equal" -- \
  "$py" "$here/compare_dump.py" "$t/dump/zstd" "$t/ref/zstd" "$t/dump/st" "$t/ref/st" "$t/dump/hf" "$t/ref/st"
if [[ $fails == "$before" ]] && ! { grep -q 'dump/zstd: compared 9 tensors, 3 objects: equal' <<<"$out" &&
                                    grep -q 'dump/st: compared 8 tensors, 0 objects: equal' <<<"$out"; }; then
  echo "FAIL values-equal did not compare every folder: $out"
  fails=$((fails + 1))
fi

# inspect shows the compressed items' views and the tensors whole; HF shards are 2 chunks.
check inspect-zstd 0 '#zstd@' -- "$root/scripts/inspect" "$t/ckpt/zstd"
grep -q '^  big  *float32  *\[1024, 1024\]' <<<"$out" || { echo "FAIL inspect-zstd: no big: $out"; fails=$((fails + 1)); }
check inspect-hf 0 '^  big  *float32  *\[1024, 1024\]' -- "$root/scripts/inspect" "$t/ckpt/hf"
for c in zstd st hf; do
  check "verify-$c" 0 '^verified: .* no problems$' -- "$root/scripts/verify" "$t/ckpt/$c"
done
grep -q 'shard-00002-model-00001-of-00001.safetensors' <(ls "$t/ckpt/hf") || { echo "FAIL hf: not sharded"; fails=$((fails + 1)); }

# Conversions: compressed DCP -> native on 3 ranks; each source -> compressed DCP, which
# PyTorch loads (and whose every item carries stream.zstd/1).
check convert-zstd-to-native 0 'from 2 to 3 ranks' -- "$root/scripts/convert" "$t/ckpt/zstd" "$t/native3" \
  --planner planners/to_fsdp.lua --world-size 3 --format native --quiet
check dcpp-loads-native 0 '^dumped ' -- "$here/dcpp_dump" "$t/native3" "$t/dump/native3"
check native-values-equal 0 'compared 9 tensors, 3 objects: equal' -- \
  "$py" "$here/compare_dump.py" "$t/dump/native3" "$t/ref/zstd"
check convert-usage 2 'compress goes with --format dcp' -- "$root/scripts/convert" "$t/ckpt/zstd" "$t/x" \
  --format native --compress zstd --quiet
for c in zstd st hf; do
  check "convert-$c-to-compressed" 0 'converted ' -- "$root/scripts/convert" "$t/ckpt/$c" "$t/out/$c" \
    --planner planners/to_fsdp.lua --world-size 2 --format dcp --compress zstd --quiet
  ref=$t/ref/st; [[ $c == zstd ]] && ref=$t/ref/zstd
  check "pytorch-loads-compressed-$c" 0 '^loaded [1-9][0-9]* tensors, [0-9]* objects: equal$' -- \
    "$py" "$here/zstd_check.py" load "$t/out/$c" "$ref"
done
check verify-compressed 0 '^verified: .* no problems$' -- "$root/scripts/verify" "$t/out/zstd"
# diff: PyTorch's compressed save and dcpp's, and the three PyTorch forms of the same tensors.
check diff-compressed 0 'identical$' -- "$root/scripts/diff" "$t/ckpt/zstd" "$t/out/zstd"
check diff-st-hf 0 'identical$' -- "$root/scripts/diff" "$t/ckpt/st" "$t/ckpt/hf"
check diff-hf-compressed 0 'identical$' -- "$root/scripts/diff" "$t/ckpt/hf" "$t/out/hf"

# Corrupt compressed data: the zstd frame's magic number (refused while reading the metadata),
# and a byte in the middle (verify re-reads every entry: a zstd error or the CRC-32 fails).
cp -r "$t/ckpt/zstd" "$t/bad1" && cp -r "$t/ckpt/zstd" "$t/bad2"
check corrupt-head 0 '^corrupted big' -- "$py" "$here/zstd_check.py" corrupt "$t/bad1" big head
check load-corrupt-head 1 "key 'big'.*zstd-compressed item at byte.*the zstd data is corrupt" -- \
  "$here/dcpp_dump" "$t/bad1" "$t/dump/bad1"
grep -q "$t/bad1/__[01]_0.distcp" <<<"$out" || { echo "FAIL load-corrupt-head names no file: $out"; fails=$((fails + 1)); }
check corrupt-middle 0 '^corrupted big' -- "$py" "$here/zstd_check.py" corrupt "$t/bad2" big middle
check verify-corrupt-middle 1 "key 'big' chunk at .*zstd-compressed item at byte" -- "$root/scripts/verify" "$t/bad2"

# A SAFETENSORS blob whose DCP_SHARDING_INFO disagrees with .metadata: named.
cp -r "$t/ckpt/st" "$t/bad3"
check move-offsets 0 "^moved w's saved_offsets" -- "$py" "$here/zstd_check.py" offsets "$t/bad3" w
check load-moved-offsets 1 "key 'w'.*its DCP_SHARDING_INFO places it at \[1:5, 0:5\] but the metadata's chunk is at \[0:4, 0:5\]" -- \
  "$here/dcpp_dump" "$t/bad3" "$t/dump/bad3"

# SAFETENSORS with ZStandard: refused naming the key, the file and why.
check st-zstd-refused 1 "key '[^']*', zstd-compressed item at byte [0-9]*): the item is an empty zstd frame, as DCP's serialization_format=SAFETENSORS writes" -- \
  "$here/dcpp_dump" "$t/ckpt/st_zstd" "$t/dump/st_zstd"

exit $fails
