#!/usr/bin/env bash
# Runs every CPU benchmark of bench/BUILD (`bazel run -c opt //bench:<name>`, each target but
# the gpu_* and *_twin ones, and py_save_load) one after the other, keeps each one's full
# output in a log folder, collects their `BENCH <name> <value> <unit>` lines and prints them as
# the table README.md's "## Benchmarks" section shows (benchmark, figure, value), followed by
# their `BASELINE <text>` lines: the machine's own figures (raw write/read GB/s, PyTorch DCP's
# times) that the ratios were taken against in the same run.
#
#   bench/all.sh [--quick] [--logs DIR] [--only NAME[,NAME...]]
#
#   --quick   small sizes and one repetition each (a check of the script and the benchmarks,
#             a few minutes; its figures are not the README's)
#   --logs    where the per-benchmark logs go (default: a new folder under /tmp)
#   --only    run only these benchmarks
#
# The full run takes tens of minutes and needs ~8 GiB of RAM and /dev/shm at its peak
# (dcp_load); run it on a machine that is otherwise quiet. A benchmark that fails is reported
# in the table (value "FAILED", see its log) and the script exits 1 after the rest have run.
set -u -o pipefail

cd "$(dirname "$0")/.."

quick=0
logs=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --logs) logs="$2"; shift ;;
    --logs=*) logs="${1#--logs=}" ;;
    --only) only="$2"; shift ;;
    --only=*) only="${1#--only=}" ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$logs" ] || logs="$(mktemp -d /tmp/dcpp-bench.XXXXXX)"
mkdir -p "$logs"

# The benchmark binaries of bench/BUILD, in file order, then the Python one (an sh_binary);
# gpu_* targets need a GPU, and *_twin ones are helpers other benchmarks start.
mapfile -t targets < <(awk '/^dcpp_cc_binary\(/{b=1} b && /name = "/{gsub(/.*name = "|".*/, ""); print; b=0}' bench/BUILD |
                       grep -v -e '^gpu_' -e '_twin$'; echo py_save_load)
if [ -n "$only" ]; then
  IFS=, read -r -a wanted <<< "$only"
  for w in "${wanted[@]}"; do
    printf '%s\n' "${targets[@]}" | grep -qx "$w" || { echo "all.sh: no CPU benchmark '$w' in bench/BUILD" >&2; exit 2; }
  done
  targets=("${wanted[@]}")
fi

# Smaller sizes for --quick (each benchmark's own flags; the defaults otherwise).
quick_args() {
  case "$1" in
    save_load) echo "--total_mib=64 --reps=1" ;;
    disk) echo "--mib=64 --reps=1" ;;
    reshard) echo "--tensors=2 --dim=1024 --reps=1" ;;
    planning) echo "--items=2000 --reps=1" ;;
    multirank_save_load) echo "--tensors=8 --dim=512 --reps=1" ;;
    convert) echo "--gib=0.1 --budget_mib=64 --reps=1" ;;
    dcp_load) echo "--reps=1 --tensors=4 --bf16=2 --rows=512 --cols=256" ;;
    small_tensors) echo "--small=1000 --large=1 --reps=1" ;;
    py_save_load) echo "--gib 0.125 --repeat 1" ;;
    *) echo "" ;;
  esac
}

echo "all.sh: ${#targets[@]} benchmarks: ${targets[*]}$([ $quick = 1 ] && echo ' (--quick)'); logs in $logs"
# One build of them all first, so that the timings below are not interleaved with compiling.
labels=()
for t in "${targets[@]}"; do labels+=("//bench:$t"); done
if ! bazel build -c opt "${labels[@]}" > "$logs/build.log" 2>&1; then
  echo "all.sh: the build failed, see $logs/build.log" >&2
  tail -20 "$logs/build.log" >&2
  exit 1
fi

failed=0
results="$logs/results.tsv"
baselines="$logs/baselines.tsv"
: > "$results"
: > "$baselines"
for t in "${targets[@]}"; do
  args=""
  [ $quick = 1 ] && args="$(quick_args "$t")"
  start=$(date +%s)
  echo "== $t $args"
  # shellcheck disable=SC2086
  if bazel run -c opt "//bench:$t" -- $args > "$logs/$t.log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
  fi
  secs=$(( $(date +%s) - start ))
  n=$(grep -c '^BENCH ' "$logs/$t.log" || true)
  echo "   $status in ${secs} s, $n figures (log: $logs/$t.log)"
  if [ "$status" = FAILED ]; then
    printf '%s\t%s\t%s\n' "$t" "-" "FAILED" >> "$results"
    tail -5 "$logs/$t.log" | sed 's/^/   | /'
  fi
  # The lines that say what the baseline's best configuration was, for the table's notes.
  grep -E '^(dcp best|dcp  threads|  \| dcp FileSystemReader)' "$logs/$t.log" | sed "s/^/   $t: /" || true
  grep '^BENCH ' "$logs/$t.log" | while read -r _ name value unit; do
    printf '%s\t%s\t%s %s\n' "$t" "$name" "$value" "$unit" >> "$results"
  done
  # The baselines' own figures in this run (`BASELINE <text>` lines), printed under the table.
  grep '^BASELINE ' "$logs/$t.log" | sed "s/^BASELINE /$t\t/" >> "$baselines" || true
done

echo
echo "| benchmark | figure | value |"
echo "| --- | --- | --- |"
prev=""
while IFS=$'\t' read -r bench figure value; do
  shown="\`$bench\`"
  [ "$bench" = "$prev" ] && shown=""
  prev="$bench"
  printf '| %s | `%s` | %s |\n' "$shown" "$figure" "$value"
done < "$results"
echo
echo "Baselines measured in the same runs (what each ratio is taken against):"
while IFS=$'\t' read -r bench text; do
  printf -- '- `%s`: %s\n' "$bench" "$text"
done < "$baselines"
echo
echo "PyTorch DCP baselines run at their best configuration: FileSystemWriter thread_count 1, 2 and 4"
echo "(save_load, small_tensors) and the best taken; FileSystemReader has no tuning options in torch 2.11;"
echo "dcp_load takes PyTorch's best of 1 and 2 intra-op threads."
[ $quick = 1 ] && echo "(--quick: small sizes, one repetition: these figures check the script, they are not the README's)"
exit $failed
