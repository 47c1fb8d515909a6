#!/usr/bin/env bash
# planners/examples/ through the convert command line: each example converts a checkpoint made
# by tests/examples/make_checkpoint, `inspect --json` shows the keys, layouts and files it
# promises, `make_checkpoint --check` reloads every value, and a bad option fails as documented.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/scripts/testing/check.sh"
root="$TEST_SRCDIR/$TEST_WORKSPACE"
convert="$root/scripts/convert"
inspect="$root/scripts/inspect"
make="$root/tests/examples/make_checkpoint"
ex="$root/planners/examples"
t="$TEST_TMPDIR"


# expect NAME DIR PYTHON: runs PYTHON with `md` = DIR's `inspect --json` and helpers: t(key)
# the tensor, chunks(key) its [(offsets, sizes, file)], keys() the tensor keys, blobs() the
# bytes keys. PYTHON asserts.
export PYTHONDONTWRITEBYTECODE=1
cat >"$t/helpers.py" <<'PY'
import json, sys
md = json.load(sys.stdin)
T = {x["key"]: x for x in md["tensors"]}
def t(key): return T[key]
def chunks(key): return [(c["offsets"], c["sizes"], c["file"]) for c in T[key]["chunks"]]
def keys(): return sorted(T)
def blobs(): return sorted(b["key"] for b in md["bytes"])
PY
expect() {
  local name=$1 dir=$2 body=$3 json
  if ! json=$("$inspect" "$dir" --json 2>&1); then
    echo "FAIL $name: inspect $dir: $json"
    fails=$((fails + 1))
    return
  fi
  if python3 -c "exec(open('$t/helpers.py').read())
$body" <<<"$json"; then
    echo "ok   $name"
  else
    echo "FAIL $name (inspect --json of $dir:)"
    echo "$json"
    fails=$((fails + 1))
  fi
}

# ---- hf_to_torchtitan.lua --------------------------------------------------------------
# A two-layer HF Llama (hidden 8, kv 4, ffn 12, vocab 32), FSDP over 2 ranks, plus a key the
# mapping does not know and a bytes entry.
hf_specs=(model.embed_tokens.weight:32x8 model.norm.weight:8 lm_head.weight:32x8
          model.layers.0.self_attn.rotary_emb.inv_freq:4)
titan_specs=(tok_embeddings.weight=model.embed_tokens.weight:32x8 norm.weight=model.norm.weight:8
             output.weight=lm_head.weight:32x8
             model.layers.0.self_attn.rotary_emb.inv_freq:4)
for n in 0 1; do
  h=model.layers.$n
  l=layers.$n
  hf_specs+=("$h.self_attn.q_proj.weight:8x8" "$h.self_attn.k_proj.weight:4x8"
             "$h.self_attn.v_proj.weight:4x8" "$h.self_attn.o_proj.weight:8x8"
             "$h.mlp.gate_proj.weight:12x8" "$h.mlp.up_proj.weight:12x8" "$h.mlp.down_proj.weight:8x12"
             "$h.input_layernorm.weight:8" "$h.post_attention_layernorm.weight:8")
  titan_specs+=("$l.attention.wq.weight=$h.self_attn.q_proj.weight:8x8"
                "$l.attention.wk.weight=$h.self_attn.k_proj.weight:4x8"
                "$l.attention.wv.weight=$h.self_attn.v_proj.weight:4x8"
                "$l.attention.wo.weight=$h.self_attn.o_proj.weight:8x8"
                "$l.feed_forward.w1.weight=$h.mlp.gate_proj.weight:12x8"
                "$l.feed_forward.w3.weight=$h.mlp.up_proj.weight:12x8"
                "$l.feed_forward.w2.weight=$h.mlp.down_proj.weight:8x12"
                "$l.attention_norm.weight=$h.input_layernorm.weight:8"
                "$l.ffn_norm.weight=$h.post_attention_layernorm.weight:8")
done
check make-hf 0 'wrote 22 tensors' -- "$make" "$t/hf" --ranks 2 "${hf_specs[@]}" --bytes config=llama-tiny

check hf-to-titan 0 'converted 23 keys' -- "$convert" "$t/hf" "$t/titan" \
  --planner "$ex/hf_to_torchtitan.lua" --world-size 2 --list
check hf-to-titan-table 0 'layers.1.attention.wo.weight (from model.layers.1.self_attn.o_proj.weight) *Shard(0)@\[2\] *Shard(1)@\[2\]' \
  -- "$convert" "$t/hf" "$t/titan-b" --planner "$ex/hf_to_torchtitan.lua" --world-size 2 --list
expect hf-to-titan-keys "$t/titan" '
assert not [k for k in keys() if k.startswith("model.layers.1.") or k == "lm_head.weight"], keys()
assert len(keys()) == 22 and blobs() == ["config"], (keys(), blobs())
for k in ["tok_embeddings.weight", "norm.weight", "output.weight", "layers.0.attention.wq.weight",
          "layers.1.feed_forward.w1.weight", "layers.1.ffn_norm.weight",
          "model.layers.0.self_attn.rotary_emb.inv_freq"]:
    assert k in keys(), k
'
expect hf-to-titan-layout "$t/titan" '
def boxes(k): return sorted((c[0], c[1]) for c in chunks(k))
# column-wise: Shard(0) over 2 ranks; row-wise: Shard(1); the rest one replicated chunk
for k, rows in [("layers.0.attention.wq.weight", 8), ("layers.0.attention.wk.weight", 4),
                ("layers.1.attention.wv.weight", 4), ("layers.0.feed_forward.w1.weight", 12),
                ("layers.1.feed_forward.w3.weight", 12), ("output.weight", 32)]:
    assert boxes(k) == [([0, 0], [rows // 2, 8]), ([rows // 2, 0], [rows // 2, 8])], (k, boxes(k))
assert boxes("layers.1.attention.wo.weight") == [([0, 0], [8, 4]), ([0, 4], [8, 4])]
assert boxes("layers.0.feed_forward.w2.weight") == [([0, 0], [8, 6]), ([0, 6], [8, 6])]
for k in ["tok_embeddings.weight", "norm.weight", "layers.0.attention_norm.weight",
          "model.layers.0.self_attn.rotary_emb.inv_freq"]:
    assert len(chunks(k)) == 1 and chunks(k)[0][0] == [0] * len(t(k)["shape"]), (k, chunks(k))
# each rank shard in its own rank files
for c in chunks("layers.0.attention.wq.weight"):
    assert c[2].startswith("__%d_" % (c[0][0] // 4)), c
'
check hf-to-titan-values 0 'equal: 22 tensors, 1 bytes' -- "$make" --check "$t/titan" "${titan_specs[@]}" --bytes config=llama-tiny
# And back: titan -> HF, consolidated on one rank; every value is the original one.
check titan-to-hf 0 'converted 23 keys' -- "$convert" "$t/titan" "$t/hf-back" --planner "$ex/hf_to_torchtitan.lua" \
  --world-size 1 --set direction=titan_to_hf --set layout=replicate
check titan-to-hf-values 0 'equal: 22 tensors, 1 bytes' -- "$make" --check "$t/hf-back" "${hf_specs[@]}" --bytes config=llama-tiny
expect titan-to-hf-consolidated "$t/hf-back" '
assert "model.layers.1.mlp.down_proj.weight" in keys() and "lm_head.weight" in keys()
assert all(len(chunks(k)) == 1 for k in keys()) and len(md["files"]) == 1, md["files"]
'
check hf-strict-unknown 1 "strict: key 'model.layers.0.self_attn.rotary_emb.inv_freq' is not a Hugging Face Llama key" \
  -- "$convert" "$t/hf" "$t/x-strict" --planner "$ex/hf_to_torchtitan.lua" --set strict=true
[[ ! -e "$t/x-strict/.metadata" ]] || { echo "FAIL strict left a checkpoint"; fails=$((fails + 1)); }
check hf-bad-direction 1 "option direction must be one of hf_to_titan, titan_to_hf, got 'sideways'" \
  -- "$convert" "$t/hf" "$t/x-dir" --planner "$ex/hf_to_torchtitan.lua" --set direction=sideways
check hf-unknown-set 2 "has no option 'permute'" \
  -- "$convert" "$t/hf" "$t/x-set" --planner "$ex/hf_to_torchtitan.lua" --set permute=true

# ---- inference_export.lua ---------------------------------------------------------------
train_specs=(model.net1.weight:16x10 model.net1.bias:16 model.net2.weight:4x16 model.step_scale:scalar
             optim.state.model.net1.weight.exp_avg:16x10 optim.state.model.net1.weight.step:scalar
             optimizer.param_groups.0.lr:scalar lr_scheduler.last_epoch:scalar
             dataloader.position:2 optimus.weight:3)
check make-train 0 'wrote 10 tensors' -- "$make" "$t/train" --ranks 2 "${train_specs[@]}" \
  --bytes rng=abc --bytes config=tiny --bytes dataloader.state=xyz
check export 0 'dropped: optim.state.model.net1.weight.exp_avg' -- "$convert" "$t/train" "$t/export" \
  --planner "$ex/inference_export.lua" --world-size 1
expect export-consolidated "$t/export" '
assert keys() == ["model.net1.bias", "model.net1.weight", "model.net2.weight", "model.step_scale",
                  "optimus.weight"], keys()
assert blobs() == [], blobs()
assert all(len(chunks(k)) == 1 and chunks(k)[0][1] == t(k)["shape"] for k in keys())
assert [f["name"] for f in md["files"]] == ["__0_0.distcp"], md["files"]
'
check export-values 0 'equal: 5 tensors' -- "$make" --check "$t/export" model.net1.weight:16x10 \
  model.net1.bias:16 model.net2.weight:4x16 model.step_scale:scalar optimus.weight:3
check export-sharded 0 'converted 7 keys' -- "$convert" "$t/train" "$t/export4" --planner "$ex/inference_export.lua" \
  --world-size 4 --set shard=true --set strip_prefix=model. --set keep_bytes=config,dataloader.state
expect export-sharded-layout "$t/export4" '
assert keys() == ["net1.bias", "net1.weight", "net2.weight", "optimus.weight", "step_scale"], keys()
assert blobs() == ["config", "dataloader.state"], blobs()
assert sorted(c[0] for c in chunks("net1.weight")) == [[0, 0], [4, 0], [8, 0], [12, 0]]
assert sorted(c[1][0] for c in chunks("net2.weight")) == [1, 1, 1, 1]
assert len(chunks("step_scale")) == 1 and t("step_scale")["shape"] == []
'
check export-sharded-values 0 'equal: 2 tensors, 2 bytes' -- "$make" --check "$t/export4" \
  net1.weight=model.net1.weight:16x10 step_scale=model.step_scale:scalar --bytes config=tiny --bytes dataloader.state=xyz
check export-missing-bytes 1 "keep_bytes names 'tokenizer', which the checkpoint has no bytes entry for" \
  -- "$convert" "$t/train" "$t/x-bytes" --planner "$ex/inference_export.lua" --set keep_bytes=tokenizer
check export-unknown-set 2 "has no option 'dtype'" \
  -- "$convert" "$t/train" "$t/x-dtype" --planner "$ex/inference_export.lua" --set dtype=bf16

# ---- file_per_key.lua --------------------------------------------------------------------
check make-place 0 'wrote 4 tensors' -- "$make" "$t/place" --ranks 2 a.weight:8x4 b.weight:6 c.bias:5 d.step:scalar --bytes meta=m
for w in hash first; do
  check "place-$w" 0 'converted 5 keys' -- "$convert" "$t/place" "$t/place-$w" --planner "$ex/file_per_key.lua" \
    --world-size 3 --set layout=replicate --set writer=$w
  expect "place-$w-files" "$t/place-$w" '
import collections, re
w = "'$w'"
assert md["planner_data"]["file_per_key.writer"] == w, md["planner_data"]
# every entry of a file is of one key; a key number N names the same key on every rank
owner = collections.defaultdict(set)
for k in keys():
    for c in chunks(k): owner[c[2]].add(k)
for b in md["bytes"]: owner[b["file"]].add(b["key"])
assert all(len(s) == 1 for s in owner.values()), dict(owner)
number = {}
for f, s in owner.items():
    rank, n = map(int, re.match(r"__(\d+)_(\d+)\.distcp$", f).groups())
    assert number.setdefault(n, s) == s, (f, s, number)
assert sorted(number) == [0, 1, 2, 3, 4], number  # one number per key, in sorted key order
assert number[0] == {"a.weight"} and number[4] == {"meta"}, number
# replicated: one chunk each, written once; "first" puts them all on rank 0
ranks = {f.split("_")[2] for f in owner}
assert all(len(chunks(k)) == 1 for k in keys())
if w == "first": assert ranks == {"0"}, owner
else: assert len(ranks) > 1, owner
'
  check "place-$w-values" 0 'equal: 4 tensors, 1 bytes' -- "$make" --check "$t/place-$w" a.weight:8x4 b.weight:6 \
    c.bias:5 d.step:scalar --bytes meta=m
done
check place-sharded 0 'converted 5 keys' -- "$convert" "$t/place" "$t/place-fsdp" --planner "$ex/file_per_key.lua" --world-size 2
expect place-sharded-files "$t/place-fsdp" '
assert sorted(c[2] for c in chunks("a.weight")) == ["__0_0.distcp", "__1_0.distcp"], chunks("a.weight")
assert sorted(c[2] for c in chunks("c.bias")) == ["__0_2.distcp", "__1_2.distcp"], chunks("c.bias")
assert len(md["files"]) == 8, md["files"]  # 3 sharded keys x 2 ranks + the 0-d tensor + bytes
'
# Converting into a folder that already holds a checkpoint: new file numbers, from
# ctx.first_file_index on, so the old files stay valid until the new metadata commits.
check place-overwrite 0 'converted 5 keys' -- "$convert" "$t/place" "$t/place-fsdp" --planner "$ex/file_per_key.lua" \
  --world-size 2 --overwrite
expect place-overwrite-numbers "$t/place-fsdp" '
assert sorted(c[2] for c in chunks("a.weight")) == ["__0_5.distcp", "__1_5.distcp"], chunks("a.weight")
'
check place-values 0 'equal: 4 tensors' -- "$make" --check "$t/place-fsdp" a.weight:8x4 b.weight:6 c.bias:5 d.step:scalar
check place-bad-writer 1 "option writer must be hash or first, got 'random'" \
  -- "$convert" "$t/place" "$t/x-writer" --planner "$ex/file_per_key.lua" --set writer=random
[[ ! -e "$t/x-writer/.metadata" ]] || { echo "FAIL bad writer left a checkpoint"; fails=$((fails + 1)); }
check place-unknown-set 2 "has no option 'files'" \
  -- "$convert" "$t/place" "$t/x-files" --planner "$ex/file_per_key.lua" --set files=1

echo "$fails failures"
exit $fails
