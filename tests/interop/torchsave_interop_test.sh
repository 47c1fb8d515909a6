#!/usr/bin/env bash
# Plain torch.save files written by the real torch (torchsave_check.py write): a Hugging Face
# pytorch_model.bin (with a tied weight and views of one storage), HF shards with an index,
# and Meta's consolidated.NN.pth of a tiny Llama (8 model-parallel files, Llama 2 layout; and
# 2 files, Llama 3 layout). dcpp reads each as a checkpoint: inspect, verify, diff, load
# (dcpp_dump, every value compared with what torch held), convert of the 8 files to TP over 2
# ranks in DCP's format loaded by dcp.load into DTensors, and export to one safetensors file
# read back by Hugging Face's safetensors. Bad files are refused with errors naming them.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"
bin="$root/scripts"
pycheck="$here/torchsave_check.py"

check python-writes 0 '^python: wrote 22 Llama tensors' -- "$py" "$pycheck" write "$t/w"
w="$t/w"

# ---- Hugging Face, one file ----
check inspect-hf 0 'tok_embeddings.weight  *bfloat16  *\[32, 16\]' -- "$bin/inspect" "$w/hf/pytorch_model.bin"
grep -q 'creator  *torch.save' <<<"$out" || { echo "FAIL inspect-hf: creator"; fails=$((fails + 1)); }
grep -q '^torch.save checkpoint (plain torch.save files)$' <<<"$out" || { echo "FAIL inspect-hf: title"; fails=$((fails + 1)); }
grep -q 'views.wq_t  *bfloat16  *\[16, 16\]' <<<"$out" || { echo "FAIL inspect-hf: the transposed view"; fails=$((fails + 1)); }
check verify-hf 0 '^verified: 26 tensors, 26 chunks' -- "$bin/verify" "$w/hf"
grep -q '^checked the CRC-32 of [0-9]* archive entries in 1 torch.save files' <<<"$out" ||
  { echo "FAIL verify-hf: no CRC-32 line: $out"; fails=$((fails + 1)); }
check dump-hf 0 '^dumped 26 tensors' -- "$here/dcpp_dump" "$w/hf/pytorch_model.bin" "$t/dump_hf"
check values-hf 0 'compared 26 tensors, 0 objects: equal' -- "$py" "$here/compare_dump.py" "$t/dump_hf" "$w/ref_hf"

# ---- Hugging Face shards + index ----
check inspect-hfs 0 'data files  *3 ' -- "$bin/inspect" "$w/hfs"
check verify-hfs 0 '^verified: 22 tensors, 22 chunks' -- "$bin/verify" "$w/hfs"
check dump-hfs 0 '^dumped 22 tensors' -- "$here/dcpp_dump" "$w/hfs" "$t/dump_hfs"
check values-hfs 0 'compared 22 tensors, 0 objects: equal' -- "$py" "$here/compare_dump.py" "$t/dump_hfs" "$w/ref_llama"

# ---- Meta consolidated.00..07.pth (Llama 2: embeddings split on dim 1) ----
check inspect-meta 0 'layers.0.feed_forward.w2.weight  *bfloat16  *\[16, 48\]' -- "$bin/inspect" "$w/meta"
grep -q 'world size  *8' <<<"$out" || { echo "FAIL inspect-meta: world size"; fails=$((fails + 1)); }
check verify-meta 0 '^verified: 22 tensors, ' -- "$bin/verify" "$w/meta"
check dump-meta 0 '^dumped 22 tensors' -- "$here/dcpp_dump" "$w/meta" "$t/dump_meta"
check values-meta 0 'compared 22 tensors, 0 objects: equal' -- "$py" "$here/compare_dump.py" "$t/dump_meta" "$w/ref_llama"
check dump-meta3 0 '^dumped 22 tensors' -- "$here/dcpp_dump" "$w/meta3" "$t/dump_meta3"
check values-meta3 0 'compared 22 tensors, 0 objects: equal' -- "$py" "$here/compare_dump.py" "$t/dump_meta3" "$w/ref_llama"
check diff-meta-hfs 0 '^22 keys compared, [0-9]* bytes: identical$' -- "$bin/diff" "$w/meta" "$w/hfs"

# 8 files -> TP over 2 ranks (DCP format) -> dcp.load into DTensors.
check convert-tp 0 'converted 22 keys .* from 8 to 2 ranks .* (dcp format)' -- "$bin/convert" "$w/meta" "$t/tp" \
  --planner planners/fsdp_to_tp.lua --world-size 2 --format dcp
grep -q 'layers.0.attention.wo.weight  *[^ ]*  *Shard(1)@\[2\]' <<<"$out" || { echo "FAIL convert-tp: wo row-wise"; fails=$((fails + 1)); }
check verify-tp 0 '^verified: 22 tensors, ' -- "$bin/verify" "$t/tp"
check pytorch-loads-tp 0 "^loaded $t/tp as TP: 22 tensors ok" -- "$py" "$pycheck" load-tp "$t/tp" "$w/ref_llama"
check diff-tp-meta 0 'identical' -- "$bin/diff" "$t/tp" "$w/meta"

# 8 files -> one safetensors file.
check export-meta 0 'exported 22 tensors .* into 1 shard' -- "$bin/export_safetensors" "$w/meta" "$t/st"
check python-reads-export 0 '^python: 22 tensors of model-00001-of-00001.safetensors match' -- \
  "$py" "$pycheck" check-st "$t/st/model-00001-of-00001.safetensors" "$w/ref_llama"

# ---- a training checkpoint: model, AdamW state (state.<index>.*), epoch, a list of tensors ----
check dump-train 0 '^dumped 18 tensors, 4 bytes entries' -- "$here/dcpp_dump" "$w/train/ckpt.pt" "$t/dump_train"
check values-train 0 'compared 18 tensors, 4 objects: equal' -- "$py" "$here/compare_dump.py" "$t/dump_train" "$w/ref_train"
check inspect-train 0 "optim.param_groups .*'lr': 0.01" -- "$bin/inspect" "$w/train/ckpt.pt"

# ---- refused ----
check evil 1 "global 'posix.system' is not allowed" -- "$here/dcpp_dump" "$w/evil.bin" "$t/x"
grep -q "$w/evil.bin" <<<"$out" || { echo "FAIL evil: the file is not named: $out"; fails=$((fails + 1)); }
grep -q 'dcpp-ran-os.system' <<<"$out" && { echo "FAIL evil: os.system ran"; fails=$((fails + 1)); }
check legacy 1 "$w/legacy.pt is in torch.save's legacy format" -- "$bin/inspect" "$w/legacy.pt"
check truncated 1 "$w/cut.bin" -- "$bin/inspect" "$w/cut.bin"
check flipped 1 "$w/flip/pytorch_model.bin: entry pytorch_model/data/[0-9]* fails its CRC-32" -- "$bin/verify" "$w/flip"

if ((fails)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all torch.save interop checks passed"
