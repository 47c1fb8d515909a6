#!/usr/bin/env bash
# Every dtype PyTorch 2.11's dcp.save writes (asked of torch itself, dtypes.py), with the MX
# scale dtype float8_e8m0fnu and NVFP4's float4_e2m1fn_x2 among them, and safetensors' F8_E8M0
# and F4: PyTorch saves -> dcpp reads bit-exact (dcpp_dump); dcpp converts to DCP over 2 ranks
# -> dcp.load reads bit-exact; dcpp exports safetensors -> the same header entries and bytes as
# safetensors.torch writes; Python's safetensors file -> dcpp reads bit-exact. The bits*
# containers, which torch.save writes but dcp.save cannot size, go through DCP both ways too.
set -uo pipefail
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/interop/common.sh"
d="$t/dtypes"

check pytorch-saves 0 'float4_e2m1fn_x2.*float8_e8m0fnu' -- "$py" "$here/dtypes.py" save "$d"
check inspect 0 't.float4_e2m1fn_x2  *float4_e2m1fn_x2  *\[6, 4\]' -- "$root/scripts/inspect" "$d/dcp"
grep -q 'scale.0d  *float8_e8m0fnu  *\[\]' <<<"$out" || { echo "FAIL inspect: no 0-d float8_e8m0fnu: $out"; fails=$((fails + 1)); }
check dcpp-reads-dcp 0 '^dumped 24 tensors' -- "$here/dcpp_dump" "$d/dcp" "$t/dump/dcp"
check dcp-bit-exact 0 'compared 24 tensors: bit-exact' -- "$py" "$here/dtypes.py" check "$t/dump/dcp" "$d/ref.pt"

check convert-to-dcp 0 '' -- "$root/scripts/convert" "$d/dcp" "$t/dcp2" --planner planners/to_fsdp.lua \
  --world-size 2 --format dcp --quiet
check pytorch-loads-dcpp-dcp 0 'read 24 tensors bit-exact: .*float4_e2m1fn_x2.*float8_e8m0fnu' -- \
  "$py" "$here/dtypes.py" load "$t/dcp2" "$d/ref.pt"

check dcpp-reads-safetensors 0 '^dumped 22 tensors' -- "$here/dcpp_dump" "$d/st/model.safetensors" "$t/dump/st"
check safetensors-bit-exact 0 'compared 22 tensors: bit-exact' -- \
  "$py" "$here/dtypes.py" check "$t/dump/st" "$d/st/model.safetensors"
check export 0 '' -- "$root/scripts/export_safetensors" "$d/st" "$t/export" --quiet
exported=$(ls "$t/export"/*.safetensors 2>/dev/null | head -n1)
check export-same-as-python 0 'same 22 tensors: .*F4 .*F8_E8M0' -- \
  "$py" "$here/dtypes.py" header "$exported" "$d/st/model.safetensors"

# bits1x8 ... bits16, which dcp.save cannot size by itself (dtypes.py tells it their size):
# dcpp reads them, and dcp.load reads dcpp's conversion.
check dcpp-reads-bits 0 '^dumped 5 tensors' -- "$here/dcpp_dump" "$d/bits" "$t/dump/bits"
check bits-bit-exact 0 'compared 5 tensors: bit-exact' -- "$py" "$here/dtypes.py" check "$t/dump/bits" "$d/bits_ref.pt"
check convert-bits 0 '' -- "$root/scripts/convert" "$d/bits" "$t/bits2" --planner planners/to_fsdp.lua \
  --world-size 2 --format dcp --quiet
check pytorch-loads-dcpp-bits 0 'read 5 tensors bit-exact: bits16 bits1x8 bits2x4 bits4x2 bits8' -- \
  "$py" "$here/dtypes.py" load "$t/bits2" "$d/bits_ref.pt"

# The comparison itself catches a changed byte.
cp -r "$t/dump/dcp" "$t/wrong"
cp "$t/dump/dcp/t.float8_e4m3fn.pt" "$t/wrong/t.float8_e8m0fnu.pt"
check check-catches-difference 1 't.float8_e8m0fnu: torch.float8_e4m3fn' -- "$py" "$here/dtypes.py" check "$t/wrong" "$d/ref.pt"

exit $fails
