#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ (bazel --config=fuzz: clang-14, ASan, UBSan), makes their
# seed corpora from real PyTorch, safetensors and dcpp files (scripts/make_fuzz_corpus.py), and
# runs each target for SECONDS (default 30), one after the other, niced. Prints one line per
# target with its executions and coverage, and exits 1 if any target crashed, leaked, hit UB or
# timed out (the input is kept under $DIR/crashes and its path printed).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]      e.g. scripts/fuzz.sh 600 pickle metadata
#
# DIR is $DCPP_FUZZ_DIR or $TMPDIR/dcpp-fuzz (/tmp/dcpp-fuzz): the corpora grow there from run
# to run. Extra libFuzzer flags: $DCPP_FUZZ_FLAGS (e.g. "-jobs=2 -workers=2").
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-30}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(pickle torch_archive safetensors dcp metadata)
DIR=${DCPP_FUZZ_DIR:-${TMPDIR:-/tmp}/dcpp-fuzz}
PY=${DCPP_PYTHON:-python3}
say() { echo "fuzz: $*" >&2; }

mkdir -p "$DIR/bin" "$DIR/crashes" "$DIR/logs"
# dcpp's own .metadata for the metadata target's seeds: the demo's two checkpoints.
rm -rf "$DIR/demo"
if ! bazel run //scripts:convert -- --demo --out "$DIR/demo" --quiet >"$DIR/logs/demo.log" 2>&1; then
  say "the demo failed (see $DIR/logs/demo.log)"; exit 1
fi
rm -rf "$DIR/seed"
"$PY" scripts/make_fuzz_corpus.py "$DIR/seed" "$DIR/demo/fsdp" "$DIR/demo/tp" >&2 || { say "corpus script failed"; exit 1; }

labels=()
for t in "${TARGETS[@]}"; do labels+=("//fuzz:${t}_fuzzer"); done
say "building ${labels[*]} with --config=fuzz"
if ! bazel build --config=fuzz "${labels[@]}" >"$DIR/logs/build.log" 2>&1; then
  grep -v "Cannot export local symbol" "$DIR/logs/build.log" | tail -n 30 >&2
  say "build failed"; exit 1
fi
for t in "${TARGETS[@]}"; do cp -f "bazel-bin/fuzz/${t}_fuzzer" "$DIR/bin/"; done

failed=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$DIR/corpus/$t"
  log="$DIR/logs/$t.log"
  # The first directory receives new inputs; the seeds are read only.
  nice -n 19 "$DIR/bin/${t}_fuzzer" -max_total_time="$SECONDS_EACH" -timeout=60 -print_final_stats=1 \
    -artifact_prefix="$DIR/crashes/$t-" ${DCPP_FUZZ_FLAGS:-} "$DIR/corpus/$t" "$DIR/seed/$t" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
  corpus=$(find "$DIR/corpus/$t" -type f | wc -l)
  if [[ $rc == 0 ]]; then
    echo "fuzz $t: ${execs:-0} executions in ${SECONDS_EACH}s, ${cov:-cov: ? ft: ?}, corpus $corpus inputs, no crash"
  else
    failed=1
    echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} executions, ${cov:-cov: ? ft: ?}; input and log:"
    grep -o "Test unit written to .*" "$log" | sed 's/^/  /'
    echo "  $log"
    grep -m1 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:" "$log" | sed 's/^/  /'
  fi
done
exit $failed
