#!/usr/bin/env bash
# Installs everything dcpp's build and tests need on a fresh Debian 12 machine of this kind:
# Debian packages (Bazel, LuaJIT, protobuf, GoogleTest, xxHash, ...) and LibTorch as the PyPI
# wheel torch==2.11.0. Idempotent: when everything is present it only checks, in seconds.
# Downloads come only from Debian's apt and PyPI. The CUDA toolkit and NCCL are expected under
# /usr/local/cuda (or $CUDA_HOME / $NCCL_HOME) for --config=cuda; the CPU build needs neither.
set -euo pipefail

TORCH_VERSION=2.11.0
APT_PACKAGES=(
  bazel-bootstrap          # Bazel 4.2.3, offline with the shims in third_party/
  g++
  libluajit2-5.1-dev       # planner scripts
  libprotobuf-dev protobuf-compiler  # checkpoint metadata
  libgtest-dev libgmock-dev          # tests
  libbenchmark-dev                   # micro-benchmarks
  libxxhash-dev                      # per-chunk XXH3 checksums
  libgloo-dev                        # gloo headers for c10d's ProcessGroupGloo.hpp
  nlohmann-json3-dev                 # inspect --json
  libcli11-dev                       # command-line parsing
  zlib1g-dev                         # crc32_combine for the zip archives inside PyTorch DCP files
  libdeflate-dev                     # their CRC-32 itself (PCLMULQDQ, ~5x zlib's crc32)
  libzstd-dev                        # DCP items compressed with PyTorch's ZStandard extension
  liburing-dev                       # batched reads through io_uring where the kernel allows it
  clang-14 libclang-rt-14-dev        # scripts/fuzz.sh: --config=fuzz (libFuzzer, ASan, UBSan runtimes)
)
PY=${DCPP_PYTHON:-python3}

say() { echo "setup: $*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  [[ $p == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  say "installing torch==$TORCH_VERSION from PyPI (LibTorch for C++ and PyTorch for interop tests)"
  "$PY" -m pip install -q "torch==$TORCH_VERSION" numpy
fi
"$PY" -c "import numpy" 2>/dev/null || "$PY" -m pip install -q numpy
# The interop tests check dcpp's safetensors files with Hugging Face's own reader.
"$PY" -c "import safetensors" 2>/dev/null || "$PY" -m pip install -q safetensors
# ... and compressed DCP with PyTorch's ZStandard extension, which needs this module.
"$PY" -c "import zstandard" 2>/dev/null || "$PY" -m pip install -q zstandard

# Bazel's repository rule finds torch through this interpreter.
if [[ -n ${DCPP_PYTHON:-} ]]; then
  say "using DCPP_PYTHON=$DCPP_PYTHON"
fi
say "ok: $(bazel --version 2>/dev/null || echo bazel), torch $("$PY" -c 'import torch; print(torch.__version__)')"
