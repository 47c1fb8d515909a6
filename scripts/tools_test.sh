#!/usr/bin/env bash
# scripts/inspect and scripts/verify on real checkpoints from scripts/demo: what they print,
# that verify finds a flipped byte and a truncated file, and their exit codes.
set -euo pipefail
bin="$TEST_SRCDIR/$TEST_WORKSPACE/scripts"
d="$TEST_TMPDIR/d"
"$bin/demo" --out "$d" >/dev/null
ckpt="$d/fsdp"

fail() { echo "FAIL: $*" >&2; exit 1; }
# Runs a command, keeping its output in $out and its exit code in $rc.
run() { set +e; out=$("$@" 2>&1); rc=$?; set -e; echo "$ $* -> $rc"; echo "$out"; }
# The same with stdout in $so and stderr in $se, apart.
run2() { set +e; so=$("$@" 2>"$TEST_TMPDIR/stderr"); rc=$?; set -e; se=$(cat "$TEST_TMPDIR/stderr"); echo "$ $* -> $rc"; echo "$so"; echo "(stderr) $se"; }

# inspect: a table naming every key, shape and data file.
run "$bin/inspect" "$ckpt"
[ "$rc" = 0 ] || fail "inspect exit $rc"
for key in net1.weight net1.bias net2.weight net2.bias '\[16, 10\]' '\[0:8, 0:10\]' xxh3_64 '__0_0.distcp'; do
  grep -q "$key" <<<"$out" || fail "inspect does not print $key"
done

# inspect --json: the documented shape.
run "$bin/inspect" "$ckpt" --json
[ "$rc" = 0 ] || fail "inspect --json exit $rc"
python3 -c '
import json, re, sys
d = json.load(sys.stdin)
assert d["format"] == "dcpp" and d["format_version"] == "1.1", d
assert d["world_size"] == 1, d["world_size"]  # the demo saves both ranks from one process
assert d["checksum_algorithm"] == "xxh3_64"
t = {e["key"]: e for e in d["tensors"]}
assert [e["key"] for e in d["tensors"]] == sorted(t), "keys not sorted"
assert set(t) == {"net1.weight", "net1.bias", "net2.weight", "net2.bias"}, t.keys()
w = t["net1.weight"]
assert w["shape"] == [16, 10] and w["dtype"] == "float32" and w["bytes"] == 640, w
assert sorted(c["offsets"] for c in w["chunks"]) == [[0, 0], [8, 0]], w["chunks"]
assert all(re.fullmatch("[0-9a-f]{16}", c["checksum"]) for c in w["chunks"])
assert t["net2.weight"]["shape"] == [10, 16]
tot = d["totals"]
assert tot["tensors"] == 4 and tot["chunks"] == 8 and tot["bytes_entries"] == 0, tot
assert tot["bytes"] == sum(c["length"] for e in d["tensors"] for c in e["chunks"]) == 4 * (160 + 16 + 160 + 10)
assert tot["files"] == len(d["files"]) and sum(f["bytes"] for f in d["files"]) == tot["bytes"]
' <<<"$out" || fail "inspect --json has the wrong shape"

# inspect says what kind of checkpoint it lists: the demo's is dcpp's own; the same converted
# to PyTorch DCP, and exported from there (export_safetensors reads any checkpoint dcpp
# reads) to safetensors, are not.
run "$bin/inspect" "$ckpt"
[ "$(head -n1 <<<"$out")" = "dcpp checkpoint, format 1.1" ] || fail "inspect's heading for a dcpp checkpoint"
run "$bin/convert" "$ckpt" "$d/dcp" --world-size 2 --format dcp --quiet
[ "$rc" = 0 ] || fail "convert --format dcp exit $rc"
run "$bin/inspect" "$d/dcp"
[ "$rc" = 0 ] && grep -q '^PyTorch DCP checkpoint$' <<<"$out" && ! grep -q 'dcpp checkpoint' <<<"$out" ||
  fail "inspect's heading for a PyTorch DCP checkpoint"
run "$bin/inspect" "$d/dcp" --json
[ "$rc" = 0 ] && python3 -c 'import json, sys; assert json.load(sys.stdin)["format"] == "dcp"' <<<"$out" ||
  fail "inspect --json's format for a PyTorch DCP checkpoint"
run "$bin/export_safetensors" "$d/dcp" "$d/st" --quiet
[ "$rc" = 0 ] && ls "$d/st"/*.safetensors >/dev/null || fail "export_safetensors of a PyTorch DCP checkpoint: exit $rc"
run "$bin/inspect" "$d/st"
[ "$rc" = 0 ] && grep -q '^safetensors checkpoint$' <<<"$out" && ! grep -q 'dcpp checkpoint' <<<"$out" ||
  fail "inspect's heading for safetensors"
run "$bin/export_safetensors" --help
[ "$rc" = 0 ] && grep -q 'any checkpoint dcpp reads' <<<"$out" && grep -q 'PyTorch DCP' <<<"$out" ||
  fail "export_safetensors --help does not name DCP sources"

# verify: a good checkpoint.
run "$bin/verify" "$ckpt" --threads 2
[ "$rc" = 0 ] || fail "verify exit $rc on a good checkpoint"
[ "$(tail -n1 <<<"$out")" = "verified: 4 tensors, 8 chunks, 1384 bytes, no problems" ] || fail "verify's last line"
run "$bin/verify" "$d/tp" --quiet
[ "$rc" = 0 ] && [ "$(wc -l <<<"$out")" = 1 ] || fail "verify --quiet on tp"

# A flipped byte inside net1.weight's first chunk: exit 1, naming the key and file.
read -r file offset < <("$bin/inspect" "$ckpt" --json | python3 -c '
import json, sys
c = next(t for t in json.load(sys.stdin)["tensors"] if t["key"] == "net1.weight")["chunks"][0]
print(c["file"], c["offset"] + 5)')
cp -r "$ckpt" "$d/flipped"
python3 -c '
import sys
p, off = sys.argv[1], int(sys.argv[2])
with open(p, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x10]))
' "$d/flipped/$file" "$offset"
run "$bin/verify" "$d/flipped"
[ "$rc" = 1 ] || fail "verify exit $rc after a flipped byte"
grep -q "key 'net1.weight' chunk \[.*\] in $file: checksum mismatch" <<<"$out" || fail "flip not named"
[ "$(tail -n1 <<<"$out")" = "FAILED: 1 problem" ] || fail "flip: last line"
# Problems go to stderr, the report's other lines to stdout; the exit code is the same.
run2 "$bin/verify" "$d/flipped"
[ "$rc" = 1 ] || fail "verify exit $rc after a flipped byte (streams apart)"
grep -q "key 'net1.weight' chunk .*: checksum mismatch" <<<"$se" && [ "$(tail -n1 <<<"$se")" = "FAILED: 1 problem" ] ||
  fail "verify's problems are not on stderr"
! grep -q 'checksum mismatch\|FAILED' <<<"$so" && grep -q '^checked 4 tensors' <<<"$so" || fail "verify's stdout"
run2 "$bin/verify" "$d/flipped" --quiet
[ "$rc" = 1 ] && [ -z "$so" ] && [ "$se" = "FAILED: 1 problem" ] || fail "verify --quiet of a flipped byte"
run2 "$bin/verify" "$ckpt" --quiet
[ "$rc" = 0 ] && [ -z "$se" ] && grep -q '^verified: ' <<<"$so" || fail "verify --quiet of a good checkpoint"

# A truncated data file: exit 1, naming the file.
cp -r "$ckpt" "$d/truncated"
truncate -s 100 "$d/truncated/$file"
run "$bin/verify" "$d/truncated"
[ "$rc" = 1 ] || fail "verify exit $rc after truncation"
grep -q "in $file: needs bytes .* (truncated)" <<<"$out" || fail "truncation not named"
grep -q '^FAILED: ' <<<"$out" || fail "truncation: no FAILED line"

# Missing folder or metadata: 1; bad command lines: 2.
run "$bin/inspect" "$d/none"
[ "$rc" = 1 ] && grep -q "$d/none" <<<"$out" || fail "inspect on a missing folder"
run "$bin/verify" "$d/none"
[ "$rc" = 1 ] && grep -q "$d/none" <<<"$out" || fail "verify on a missing folder"
run2 "$bin/verify" "$d/none"
[ "$rc" = 1 ] && [ -z "$so" ] && grep -q "^verify: error: .*$d/none" <<<"$se" || fail "verify's error is not on stderr"
mkdir -p "$d/empty"
run "$bin/inspect" "$d/empty"
[ "$rc" = 1 ] && grep -q '\.metadata is missing' <<<"$out" || fail "inspect without .metadata"
printf 'garbage' >"$d/flipped/.metadata"
run "$bin/inspect" "$d/flipped"
[ "$rc" = 1 ] && grep -q '\.metadata is corrupt' <<<"$out" || fail "inspect on corrupt .metadata"
run "$bin/verify" "$d/flipped"
[ "$rc" = 1 ] && grep -q '\.metadata is corrupt' <<<"$out" || fail "verify on corrupt .metadata"
# A native checkpoint whose metadata says checksum algorithm "none" (field 6 of the metadata
# message rewritten in place): read, not verified, and both tools say so loudly, verify even
# with --quiet (and fails: for a native checkpoint that is a problem).
cp -r "$ckpt" "$d/nosums"
python3 -c '
import sys
p = sys.argv[1]
b = open(p, "rb").read()
old = b"\x32\x07xxh3_64"
assert b.count(old) == 1, "checksum_algorithm field not found"
# Format 1.1 ends in its own checksum (tag 0x79, 8 bytes): write it back as a 1.0 file
# (format_minor, field 2, left out) without one, as an editor of the field would.
assert b[:4] == b"\x08\x01\x10\x01" and b[-9] == 0x79, "not a 1.1 metadata"
b = b"\x08\x01" + b[4:-9]
open(p, "wb").write(b.replace(old, b"\x32\x04none"))
' "$d/nosums/.metadata"
run "$bin/inspect" "$d/nosums"
[ "$rc" = 0 ] && grep -q '^checksums: NONE — data is not verified' <<<"$out" || fail "inspect of a native checkpoint without checksums"
run "$bin/inspect" "$d/nosums" --json
[ "$rc" = 0 ] && grep -q 'checksums: NONE' <<<"$out" || fail "inspect --json of a native checkpoint without checksums"
run "$bin/verify" "$d/nosums" --quiet
[ "$rc" = 1 ] && grep -q '^checksums: NONE — data is not verified' <<<"$out" || fail "verify of a native checkpoint without checksums"
run "$bin/inspect" "$ckpt"
! grep -q 'checksums: NONE' <<<"$out" || fail "inspect warns about a checkpoint with checksums"
# Tools that read its data refuse it, naming the folder and the way out, unless verification
# is off; nothing is written.
for cmd in "convert $d/nosums $d/nosums_out --planner planners/fsdp_to_tp.lua --world-size 2 --quiet" \
           "diff $d/nosums $ckpt --quiet" "export_safetensors $d/nosums $d/nosums_out --quiet"; do
  run $bin/$cmd
  [ "$rc" = 1 ] && grep -q "checkpoint $d/nosums: its metadata says checksum algorithm 'none', which dcpp never writes" <<<"$out" &&
    grep -q -- '--no-verify' <<<"$out" || fail "${cmd%% *} reads a native checkpoint without checksums"
  [ ! -e "$d/nosums_out/.metadata" ] && [ ! -e "$d/nosums_out/model.safetensors" ] || fail "${cmd%% *} wrote output"
  run $bin/$cmd --no-verify
  [ "$rc" = 0 ] || fail "${cmd%% *} --no-verify of a native checkpoint without checksums: exit $rc"
  rm -rf "$d/nosums_out"
done

# Any string is a key: "" (PyTorch saves {"": t}), spaces, unicode, runs of dots pass through
# convert (into dcpp's format and PyTorch's), inspect, verify, diff and export_safetensors.
python3 - "$d/odd.safetensors" <<'PY'
import json, struct, sys
header, data = {}, b""
for i, key in enumerate(["", " ", "a b.c", "\u00fcn\u00ef.c\u00f6de", "a..b."]):
    header[key] = {"dtype": "F32", "shape": [4, 2], "data_offsets": [len(data), len(data) + 32]}
    data += struct.pack("<8f", *[i + k / 8 for k in range(8)])
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
odd_keys='["", " ", "a b.c", "a..b.", "\u00fcn\u00ef.c\u00f6de"]'
for fmt in native dcp; do
  run "$bin/convert" "$d/odd.safetensors" "$d/odd_$fmt" --planner planners/to_fsdp.lua --world-size 2 --format $fmt --quiet
  [ "$rc" = 0 ] || fail "convert --format $fmt of odd keys: exit $rc"
  run "$bin/inspect" "$d/odd_$fmt" --json
  [ "$rc" = 0 ] && python3 -c '
import json, sys
got = [t["key"] for t in json.load(sys.stdin)["tensors"]]
assert got == sorted(json.loads(sys.argv[1])), got
' "$odd_keys" <<<"$out" || fail "inspect --json of odd keys ($fmt)"
  run "$bin/inspect" "$d/odd_$fmt"
  [ "$rc" = 0 ] && grep -q '^total: 5 tensors' <<<"$out" && grep -q '^  ""  *float32' <<<"$out" &&
    grep -q '^  " "  *float32' <<<"$out" || fail "inspect of odd keys ($fmt)"
  run "$bin/verify" "$d/odd_$fmt"
  [ "$rc" = 0 ] && grep -q '^verified: 5 tensors' <<<"$out" || fail "verify of odd keys ($fmt)"
  run "$bin/diff" "$d/odd.safetensors" "$d/odd_$fmt"
  [ "$rc" = 0 ] && grep -q 'identical$' <<<"$out" || fail "diff of odd keys ($fmt)"
  run "$bin/export_safetensors" "$d/odd_$fmt" "$d/odd_st_$fmt" --quiet
  [ "$rc" = 0 ] || fail "export_safetensors of odd keys ($fmt): exit $rc"
  python3 - "$d/odd_st_$fmt" "$odd_keys" <<'PY' || fail "export_safetensors of odd keys ($fmt): the exported file"
import glob, json, struct, sys
want = json.loads(sys.argv[2])
(path,) = glob.glob(sys.argv[1] + "/*.safetensors")
b = open(path, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h.pop("__metadata__", None)
assert sorted(h) == sorted(want), sorted(h)
for i, key in enumerate(["", " ", "a b.c", "\u00fcn\u00ef.c\u00f6de", "a..b."]):
    lo, hi = h[key]["data_offsets"]
    assert struct.unpack("<8f", b[8 + n + lo:8 + n + hi]) == tuple(i + k / 8 for k in range(8)), key
PY
  run "$bin/diff" "$d/odd.safetensors" "$d/odd_st_$fmt"
  [ "$rc" = 0 ] && grep -q 'identical$' <<<"$out" || fail "diff of odd keys after export ($fmt)"
done

for tool in inspect verify; do
  run "$bin/$tool"
  [ "$rc" = 2 ] || fail "$tool without arguments: exit $rc"
  run "$bin/$tool" "$ckpt" --no-such-flag
  [ "$rc" = 2 ] || fail "$tool with an unknown flag: exit $rc"
done
run "$bin/verify" "$ckpt" --threads 0
[ "$rc" = 2 ] || fail "verify --threads 0: exit $rc"
echo PASS
