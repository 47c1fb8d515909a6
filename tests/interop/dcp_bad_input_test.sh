#!/usr/bin/env bash
# Bad DCP checkpoints made by the real PyTorch (bad_input.py): a .metadata pickle that would run
# os.system (as GLOBAL, and as posix.system hidden inside real DCP metadata), a truncated
# .metadata, an unknown Metadata.version, a truncated data file, a flipped bit in a tensor's
# data, items the metadata calls compressed that are not. dcpp's tools must refuse each with exit code 1 and a message that names the problem,
# and never run the payload.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"
inspect="$root/scripts/inspect"
dump="$here/dcpp_dump"
b="$t/bad"
marker="$t/MARKER"

check make 0 '^made bad checkpoints' -- "$py" "$here/bad_input.py" "$b" "$marker"
check good-loads 0 '^dumped 2 tensors, 2 bytes entries$' -- "$dump" "$b/good" "$t/dump"
# PyTorch's own archives pass every structure, CRC-32 and global check.
check good-verify 0 '^verified: 2 tensors' -- "$root/scripts/verify" "$b/good"

# (a) A pickle that calls os.system: refused by name, nothing executed.
check global-inspect 1 "global 'os.system' is not allowed in .*evil_global/.metadata" -- "$inspect" "$b/evil_global"
check global-dump 1 "global 'os.system' is not allowed" -- "$dump" "$b/evil_global" "$t/x"
check global-convert 1 "global 'os.system' is not allowed" -- "$root/scripts/convert" "$b/evil_global" "$t/x2" --world-size 2
[[ ! -e "$t/x2/.metadata" ]] || { echo "FAIL convert of an evil checkpoint committed one"; fails=$((fails + 1)); }
check nested-inspect 1 "global 'posix.system' is not allowed in .*evil_nested/.metadata" -- "$inspect" "$b/evil_nested"
check nested-verify 1 "global 'posix.system' is not allowed" -- "$root/scripts/verify" "$b/evil_nested"
[[ ! -e "$marker" ]] || { echo "FAIL a pickle payload ran: $marker exists"; fails=$((fails + 1)); }

# (b) .metadata cut to half.
check truncated-metadata 1 'truncated .*truncated_md/.metadata' -- "$inspect" "$b/truncated_md"

# (c) Metadata.version 9.9.9.
check unknown-version 1 "version '9.9.9' is unknown" -- "$inspect" "$b/version"

# (d) A data file cut in the middle of an item: the message names the file and the key.
key=$(cat "$b/truncated_key")
file=$(cat "$b/truncated_file")
check truncated-data 1 "$file (key '$key'.*truncated" -- "$dump" "$b/truncated_data" "$t/y"

# (e) A flipped bit in a tensor's data: DCP records no checksums, but each item's archive has
# the CRC-32 of its data, which verify checks.
check corrupt-verify 1 "key 'w' .*fails its CRC-32" -- "$root/scripts/verify" "$b/corrupt"
grep -q '^FAILED: 1 problem' <<<"$out" || { echo "FAIL corrupt-verify: want exactly 1 problem: $out"; fails=$((fails + 1)); }
# ... which convert checks too, on the way through: nothing is re-emitted with fresh, valid
# checksums. --no-verify lets it through. (load checks it with LoadOptions::verify_dcp_crc32.)
check corrupt-convert 1 "key 'w' .*fails its CRC-32" -- "$root/scripts/convert" "$b/corrupt" "$t/c2" --world-size 2 --format dcp
[[ ! -e "$t/c2/.metadata" ]] || { echo "FAIL convert of a corrupt checkpoint committed one"; fails=$((fails + 1)); }
check corrupt-no-verify 0 '' -- "$root/scripts/convert" "$b/corrupt" "$t/c3" --world-size 2 --no-verify --quiet
check corrupt-strided 1 "key 't' .*fails its CRC-32" -- "$root/scripts/convert" "$b/corrupt_t" "$t/c4" --world-size 1 --quiet
check corrupt-strided-verify 1 "key 't' .*fails its CRC-32" -- "$root/scripts/verify" "$b/corrupt_t"

# (g) A flipped byte in a bytes item's zip end record, which no CRC-32 covers and on which
# dcp.load fails (bad_input.py checked): verify names the key and what disagrees.
eocd_key=$(cat "$b/eocd_key")
check eocd-verify 1 "key '$eocd_key' .*\(end record\|central directory\)" -- "$root/scripts/verify" "$b/eocd"

# (h) A bytes item whose pickle runs os.system under dcp.load: verify names the global as a
# problem, inspect as a warning; neither runs it.
check evil-bytes-verify 1 "bytes key 'evil' .*posix.system" -- "$root/scripts/verify" "$b/evil_bytes"
grep -q '^FAILED: 1 problem' <<<"$out" || { echo "FAIL evil-bytes-verify: want exactly 1 problem: $out"; fails=$((fails + 1)); }
check evil-bytes-inspect 0 "warning: bytes key 'evil' .*posix.system" -- "$inspect" "$b/evil_bytes"
check evil-bytes-json 0 '"warnings"' -- "$inspect" "$b/evil_bytes" --json
check evil-bytes-convert 0 "warning: bytes key 'evil' .*posix.system" -- "$root/scripts/convert" "$b/evil_bytes" "$t/e1" --world-size 2 --format dcp --quiet
[[ ! -e "$marker" ]] || { echo "FAIL a pickle payload ran: $marker exists"; fails=$((fails + 1)); }

# (f) Metadata that says every item is zstd-compressed over items that are not: the first one
# read is refused naming its key, its file and zstd's reason.
check stream-transform 1 "key '[^']*'.*zstd-compressed item at byte [0-9]*): the zstd data is corrupt" -- \
  "$dump" "$b/transformed" "$t/z"
grep -q "$b/transformed/__0_0.distcp" <<<"$out" || { echo "FAIL stream-transform names no file: $out"; fails=$((fails + 1)); }

exit $fails
