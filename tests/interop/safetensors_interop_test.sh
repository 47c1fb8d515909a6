#!/usr/bin/env bash
# safetensors with the real Python libraries (torch, safetensors of @torch//:python.txt):
#  (a) a checkpoint saved in several layouts and dtypes -> export_safetensors -> Python's
#      safetensors.torch.load_file reads every shard and finds the values saved;
#  (b) shards written by Python's save_file with a hand-written index -> inspect, verify,
#      convert to TP, diff against the source, and exported back for Python to compare.
# Plus the export command line's refusals, failures and exit codes.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"
bin="$root/scripts"
export_st="$bin/export_safetensors"
pycheck="$root/tests/interop/safetensors_check.py"

"$py" -c 'import safetensors, torch' || { echo "FAIL: $py cannot import safetensors and torch (run scripts/setup.sh)"; exit 1; }

# ---- (a) dcpp -> safetensors -> Python ----
"$root/tests/interop/make_sharded" "$t/native" || { echo "FAIL: make_sharded"; exit 1; }
check export 0 '^exported 8 tensors (6.5 KiB) into 4 shards in .*; [0-9]* source chunks verified; 1 bytes entry skipped$' -- \
  "$export_st" "$t/native" "$t/hf" --max-shard-size 2KB
grep -q '^skipped bytes entry: extra_state (safetensors holds only tensors)$' <<<"$out" || { echo "FAIL export does not list the skipped entry"; fails=$((fails + 1)); }
grep -q '^model-00004-of-00004.safetensors  ' <<<"$out" || { echo "FAIL export does not list the shards"; fails=$((fails + 1)); }
check python-reads-export 0 '^python: 8 tensors in 4 shards match$' -- "$py" "$pycheck" check-export "$t/hf"

# dcpp reads its own export back: inspect, verify (no checksums in safetensors), diff.
check inspect-export 0 'checksum  *none' -- "$bin/inspect" "$t/hf"
grep -q 'creator  *safetensors' <<<"$out" || { echo "FAIL inspect: creator"; fails=$((fails + 1)); }
check verify-export 0 '^verified: 8 tensors, 8 chunks, ' -- "$bin/verify" "$t/hf"
grep -q '^note: checksums are not available for this format' <<<"$out" || { echo "FAIL verify: no note on checksums"; fails=$((fails + 1)); }
check diff-export 1 '^1 key differs; 8 keys compared, 6682 bytes$' -- "$bin/diff" "$t/native" "$t/hf"
grep -q '^only in A: extra_state$' <<<"$out" || { echo "FAIL diff: extra_state"; fails=$((fails + 1)); }
check diff-one-shard 1 'only in B: model.embed.weight' -- "$bin/diff" "$t/hf/model-00001-of-00004.safetensors" "$t/hf"

# A tiny memory budget: same files.
check small-budget 0 'exported 8 tensors' -- "$export_st" "$t/native" "$t/small" --max-shard-size 2KB --memory-budget 1K --quiet
[[ $(wc -l <<<"$out") == 1 ]] || { echo "FAIL --quiet prints more than the summary"; fails=$((fails + 1)); }
for f in "$t/hf"/*; do
  cmp -s "$f" "$t/small/$(basename "$f")" || { echo "FAIL $f differs with a small budget"; fails=$((fails + 1)); }
done

# --dtype: an fp32/fp16 checkpoint exported as bf16 with the norm kept, and converted to fp16
# TP with the norm in fp32 then exported as it is; Python finds `t.to(dtype)` bit for bit.
check export-bf16 0 'exported 8 tensors .*; 2 cast (--dtype)' -- \
  "$export_st" "$t/native" "$t/bf16" --dtype bf16 --dtype '*norm*=keep'
check python-reads-bf16 0 '^python: 8 tensors in 1 shards match, 2 of them cast$' -- \
  "$py" "$pycheck" check-cast "$t/bf16" bfloat16 model.norm.weight=float64
check convert-fp16 0 'cast (--dtype): 1 key bfloat16 -> float16' -- \
  "$bin/convert" "$t/native" "$t/fp16" --world-size 2 --dtype 'model.norm.*=fp32' --dtype fp16
for c in 'float32 -> float16' 'float64 -> float32'; do
  grep -q "^cast (--dtype): 1 key $c\$" <<<"$out" || { echo "FAIL convert: no cast $c"; fails=$((fails + 1)); }
done
check verify-fp16 0 '^verified: ' -- "$bin/verify" "$t/fp16"
check export-fp16 0 'exported 8 tensors' -- "$export_st" "$t/fp16" "$t/fp16st"
check python-reads-fp16 0 '^python: 8 tensors in 1 shards match, 3 of them cast$' -- \
  "$py" "$pycheck" check-cast "$t/fp16st" float16 model.norm.weight=float32
check bad-dtype 2 "--dtype: dtype rule 'int4': unknown dtype 'int4'" -- "$export_st" "$t/native" "$t/x0" --dtype int4
check bad-dtype-convert 2 "--dtype: dtype rule 'bf16': a second rule without a key pattern" -- \
  "$bin/convert" "$t/native" "$t/x0" --dtype fp16 --dtype bf16

# An existing export: refused (untouched), then replaced; old shards that are not reused go.
before=$(cd "$t/hf" && ls && cat ./* | md5sum)
check refuse-existing 1 'already holds a safetensors checkpoint (model-00001-of-00004.safetensors, ...); pass --overwrite' -- \
  "$export_st" "$t/native" "$t/hf"
[[ "$before" == "$(cd "$t/hf" && ls && cat ./* | md5sum)" ]] || { echo "FAIL refused export changed DST"; fails=$((fails + 1)); }
check overwrite 0 'into 1 shard in' -- "$export_st" "$t/native" "$t/hf" --overwrite
[[ "$(ls "$t/hf")" == $'model-00001-of-00001.safetensors\nmodel.safetensors.index.json' ]] || {
  echo "FAIL overwrite left: $(ls "$t/hf")"; fails=$((fails + 1)); }
check python-reads-overwrite 0 '^python: 8 tensors in 1 shards match$' -- "$py" "$pycheck" check-export "$t/hf"

# A corrupt source chunk: a checksum error naming the key, and nothing written.
cp -r "$t/native" "$t/bad"
file=$(ls "$t/bad" | grep distcp | head -1)
"$py" - "$t/bad/$file" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[3] ^= 0xff
open(p, 'wb').write(b)
PY
check corrupt-source 1 "export_safetensors: error: checksum mismatch for key '" -- "$export_st" "$t/bad" "$t/x1"
[[ ! -e "$t/x1" ]] || { echo "FAIL a failed export left $t/x1"; fails=$((fails + 1)); }
check missing-source 1 "no checkpoint at $t/nothing" -- "$export_st" "$t/nothing" "$t/x2"
check no-args 2 'SRC is required' -- "$export_st"
check bad-shard-size 2 "cannot read 'lots' as a" -- "$export_st" "$t/native" "$t/x3" --max-shard-size lots
check bad-budget 2 'cannot read' -- "$export_st" "$t/native" "$t/x3" --memory-budget 0
check help 0 'as Hugging Face safetensors shards' -- "$export_st" --help

# ---- (b) Python's safetensors -> dcpp ----
check python-writes 0 '^python: wrote 6 tensors in 2 shards$' -- "$py" "$pycheck" write "$t/pyhf" "$t/expected.pt"
check inspect-python 0 'net1.weight  *bfloat16  *\[16, 10\]' -- "$bin/inspect" "$t/pyhf"
check verify-python 0 '^verified: 6 tensors, 6 chunks' -- "$bin/verify" "$t/pyhf"
check convert-to-tp 0 'converted 6 keys .* from 1 to 2 ranks' -- \
  "$bin/convert" "$t/pyhf" "$t/tp" --planner planners/fsdp_to_tp.lua --world-size 2
grep -q 'net1.weight  *whole  *Shard(0)@\[2\]' <<<"$out" || { echo "FAIL convert: net1.weight"; fails=$((fails + 1)); }
grep -q 'net2.weight  *whole  *Shard(1)@\[2\]' <<<"$out" || { echo "FAIL convert: net2.weight"; fails=$((fails + 1)); }
check verify-tp 0 '^verified: 6 tensors, ' -- "$bin/verify" "$t/tp"
check diff-python-tp 0 '^6 keys compared, [0-9]* bytes: identical$' -- "$bin/diff" "$t/pyhf" "$t/tp"
check diff-tp-python 0 'identical' -- "$bin/diff" "$t/tp" "$t/pyhf" --memory-budget 1K
check convert-one-file 0 'converted 2 keys' -- \
  "$bin/convert" "$t/pyhf/model-00001-of-00002.safetensors" "$t/tp1" --world-size 2 --quiet
check export-tp 0 'exported 6 tensors' -- "$export_st" "$t/tp" "$t/back" --max-shard-size 400
check python-reads-back 0 '^python: 6 tensors in [0-9]* shards match$' -- "$py" "$pycheck" compare "$t/back" "$t/expected.pt"

# A shard the index names is missing: an error naming both.
cp -r "$t/pyhf" "$t/broken"
rm "$t/broken/model-00002-of-00002.safetensors"
check missing-shard 1 'model.safetensors.index.json names file model-00002-of-00002.safetensors, which is missing' -- \
  "$bin/inspect" "$t/broken"

if ((fails)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all safetensors interop checks passed"
