#!/usr/bin/env bash
# Two simulated hosts (issue 16): two network namespaces joined by a veth pair with private
# addresses, the real torchrun on each ("node" 0 and 1, static rendezvous at node 0's veth
# address, GLOO_SOCKET_IFNAME the veth) running tests/netns/two_node_worker with --no-python,
# and one shared folder.
#
#   1. 2 nodes x 2 ranks save a checkpoint (sharded, uneven, replicated, bytes entries);
#      scripts/verify checks it; 3 ranks split 2+1 across the nodes load it, every value checked.
#   2. Node 1 is killed (every process in its namespace) while 4 ranks save a larger checkpoint
#      into a new folder, then node 0 (rank 0 and the store) while they re-save over the
#      committed one, then node 1's link is taken down mid-save (a silent node: no connection
#      closes). Each time every rank left must fail within RANK_BOUND_S and each surviving
#      torchrun end within NODE_BOUND_S, nothing new may be committed, and the committed
#      checkpoint must still verify and finally load with its values.
#
# Needs root and `ip netns`: where namespaces cannot be made it prints "SKIP: why" and passes.
# Every process runs under `timeout`; the EXIT trap kills every process in the namespaces and
# removes them (and with them the veth pair). Only addresses inside those namespaces are used.
set -uo pipefail

root="$TEST_SRCDIR/$TEST_WORKSPACE"
worker="$root/tests/netns/two_node_worker"
verify="$root/scripts/verify"
t="$TEST_TMPDIR"

readonly COLLECTIVE_TIMEOUT_S=6  # DCPP_COLLECTIVE_TIMEOUT_S for every rank
# From the kill or cut to the last rank's error: one collective timeout, plus 3 s for a rank
# still writing its share when it happens; to its node's torchrun ending: 7 s more (torchrun
# takes 2-4 s here to end its other workers and itself).
readonly RANK_BOUND_S=$((COLLECTIVE_TIMEOUT_S + 3))
readonly NODE_BOUND_S=$((COLLECTIVE_TIMEOUT_S + 10))
readonly NODE_TIMEOUT_S=60        # any one torchrun
readonly BIG_MB=64                # per rank, in the saves that a kill interrupts

skip() {
  echo "SKIP: $*"
  exit 0
}
fails=0
fail() {
  echo "FAIL $*"
  fails=$((fails + 1))
}

py=$(head -n1 "$TEST_SRCDIR/torch/python.txt" 2>/dev/null || true)
[[ -n $py ]] || skip "LibTorch did not come from a Python install (no python in @torch//:python.txt), so no torchrun"
[[ $(id -u) == 0 ]] || skip "not root (uid $(id -u)): creating network namespaces needs CAP_SYS_ADMIN"
command -v ip >/dev/null || skip "no 'ip' command (iproute2) to create network namespaces"
command -v timeout >/dev/null || skip "no 'timeout' command to bound the processes"

# Names unique to this run; interface names stay within Linux's 15 characters.
ns=("dcpp$$n0" "dcpp$$n1")
dev=("dn$$v0" "dn$$v1")
addr=(10.233.0.1 10.233.0.2)
made=()

# Every process in namespace $1, killed (a "node" going away at once).
kill_node() {
  local pids
  pids=$(ip netns pids "$1" 2>/dev/null)
  [[ -z $pids ]] || kill -KILL $pids 2>/dev/null
}

cleanup() {
  local n p
  for n in "${made[@]}"; do kill_node "$n"; done
  # ip netns del detaches the name at once; the namespace (and the veth pair in it) goes when
  # its last process has gone, which SIGKILL makes immediate.
  for n in "${made[@]}"; do
    for p in $(seq 50); do [[ -z $(ip netns pids "$n" 2>/dev/null) ]] && break; sleep 0.1; done
    ip netns del "$n" 2>/dev/null || echo "cleanup: could not delete namespace $n"
  done
}
trap cleanup EXIT
trap 'exit 1' INT TERM  # a test timeout's SIGTERM still runs cleanup

if ! err=$(ip netns add "${ns[0]}" 2>&1); then
  [[ $err != *"File exists"* ]] || { echo "FAIL namespace ${ns[0]} exists already: $err"; exit 1; }
  skip "cannot create a network namespace here (ip netns add: $err)"
fi
made+=("${ns[0]}")
ip netns add "${ns[1]}" || { echo "FAIL ip netns add ${ns[1]}"; exit 1; }
made+=("${ns[1]}")
# The veth pair is created with its ends already inside the namespaces: the host's own
# interfaces and addresses are never touched.
ip link add "${dev[0]}" netns "${ns[0]}" type veth peer name "${dev[1]}" netns "${ns[1]}" ||
  { echo "FAIL creating the veth pair"; exit 1; }
for i in 0 1; do
  ip -n "${ns[i]}" addr add "${addr[i]}/30" dev "${dev[i]}" &&
    ip -n "${ns[i]}" link set lo up && ip -n "${ns[i]}" link set "${dev[i]}" up ||
    { echo "FAIL configuring ${dev[i]} in ${ns[i]}"; exit 1; }
done
echo "nodes: ${ns[0]} ${dev[0]} ${addr[0]} <-> ${ns[1]} ${dev[1]} ${addr[1]}"

now_ms() { date +%s%3N; }
port=29500
pid=()

# start NODE NPROC LOG ARGS...: the real torchrun as node NODE (0 or 1) with NPROC ranks, in
# the background (its pid in pid[NODE]; its exit status and end time in LOG.end). A new port
# per launch: no wait on the last one's sockets.
start() {
  local i=$1 nproc=$2 log=$3
  shift 3
  (timeout -k 5 "$NODE_TIMEOUT_S" ip netns exec "${ns[i]}" env \
    GLOO_SOCKET_IFNAME="${dev[i]}" OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1 \
    DCPP_COLLECTIVE_TIMEOUT_S="$COLLECTIVE_TIMEOUT_S" DCPP_RENDEZVOUS_TIMEOUT_S=30 \
    "$py" -m torch.distributed.run --nnodes=2 --node-rank="$i" --nproc-per-node="$nproc" \
    --master-addr="${addr[0]}" --master-port="$port" --max-restarts=0 --monitor-interval=0.2 \
    --no-python "$worker" "$@" >"$log" 2>&1
  echo "$? $(now_ms)" >"$log.end") 2>/dev/null &  # no "Killed" notice when a node is killed
  pid[i]=$!
}

# pair NAME NPROC0 NPROC1 ARGS...: both nodes run the worker; both must end well.
pair() {
  local name=$1 n0=$2 n1=$3 rc0 rc1
  shift 3
  port=$((port + 1))
  start 0 "$n0" "$t/$name.node0.log" "$@"
  start 1 "$n1" "$t/$name.node1.log" "$@"
  wait "${pid[0]}" "${pid[1]}"
  read -r rc0 _ <"$t/$name.node0.log.end"
  read -r rc1 _ <"$t/$name.node1.log.end"
  if [[ $rc0 == 0 && $rc1 == 0 ]]; then
    echo "ok   $name (${SECONDS} s into the test)"
    cat "$t/$name".node*.log | grep -E '^rank [0-9]+ of' | sort
    return 0
  fi
  fail "$name: node 0 rc=$rc0, node 1 rc=$rc1"
  tail -n 40 "$t/$name".node*.log
  return 1
}

# verify DIR: scripts/verify finds no problem.
verify_ok() {
  local out
  if out=$(timeout 60 "$verify" "$1" 2>&1); then
    echo "ok   verify $1: $(tail -n1 <<<"$out")"
  else
    fail "verify $1"
    echo "$out"
  fi
}

data_files() { find "$1" -maxdepth 1 -name '__*.distcp' 2>/dev/null | wc -l; }

# ms_to_s MS: "1.234"
ms_to_s() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# interrupt_save NAME EVENT DIR GEN: 4 ranks save generation GEN with BIG_MB MiB each into DIR;
# once the save is writing (a new data file in DIR) EVENT happens: "kill0" / "kill1" kills every
# process of that node, "cut" takes node 1's end of the link down (a node gone silent, its
# connections never closed). Every rank left must fail within RANK_BOUND_S of the event (or be
# ended by its torchrun once a sibling has failed) with a dcpp error saying that nothing was
# committed and, after a kill, that a peer failed (on each node at least one naming the killed
# node's address; the others may name a sibling that failed first), after the cut, that no
# answer came within the collective timeout; each surviving node's torchrun must end with an
# error within NODE_BOUND_S.
interrupt_save() {
  local name=$1 event=$2 dir=$3 gen=$4 before deadline event_ms i survivors=() victims
  mkdir -p "$dir"
  before=$(data_files "$dir")
  port=$((port + 1))
  start 0 2 "$t/$name.node0.log" save "$dir" "$gen" "$BIG_MB"
  start 1 2 "$t/$name.node1.log" save "$dir" "$gen" "$BIG_MB"
  deadline=$((SECONDS + NODE_TIMEOUT_S))
  while (($(data_files "$dir") <= before && SECONDS < deadline)); do sleep 0.01; done
  if (($(data_files "$dir") <= before)); then
    fail "$name: the save wrote no data file within ${NODE_TIMEOUT_S} s"
    tail -n 20 "$t/$name".node*.log
    kill_node "${ns[0]}"; kill_node "${ns[1]}"; wait 2>/dev/null
    return
  fi
  case $event in
    kill*)
      i=${event#kill}
      survivors=($((1 - i)))
      victims=$(ip netns pids "${ns[i]}")
      event_ms=$(now_ms)
      kill -KILL $victims
      ;;
    cut)
      survivors=(0 1)
      event_ms=$(now_ms)
      ip -n "${ns[1]}" link set "${dev[1]}" down
      ;;
  esac
  wait "${pid[0]}" "${pid[1]}"
  local saved lines ms late first=-1 last=-1 rc end ok=1 n
  saved=$(cat "$t/$name".node*.log | grep -c ': saved$')
  ((saved == 0)) || { fail "$name: $saved ranks finished the save: the $event came too late"; ok=0; }
  echo "$name: $event at the start of writing; after it:"
  for n in "${survivors[@]}"; do
    read -r rc end <"$t/$name.node$n.log.end"
    echo "  node $n's torchrun ended with rc=$rc after $(ms_to_s $((end - event_ms))) s"
    if [[ $rc == 0 ]] || ((end - event_ms > NODE_BOUND_S * 1000)); then
      fail "$name: node $n's torchrun rc=$rc, $((end - event_ms)) ms after the $event (bound ${NODE_BOUND_S} s)"
      ok=0
    fi
    lines=$(grep -E '^rank [0-9]+ of 4 failed at [0-9]+ ms: ' "$t/$name.node$n.log")
    [[ -n $lines ]] || { fail "$name: no rank of node $n reported an error"; tail -n 20 "$t/$name.node$n.log"; ok=0; continue; }
    while read -r line; do
      ms=$(sed -E 's/^rank [0-9]+ of 4 failed at ([0-9]+) ms.*/\1/' <<<"$line")
      late=$((ms - event_ms))
      ((first < 0 || late < first)) && first=$late
      ((late > last)) && last=$late
      echo "  after $(ms_to_s $late) s: ${line:0:400}"
      ((late <= RANK_BOUND_S * 1000)) || { fail "$name: an error came ${late} ms after the $event (bound ${RANK_BOUND_S} s)"; ok=0; }
      [[ $line == *"nothing was committed"* ]] || { fail "$name: the error does not say nothing was committed"; ok=0; }
      if [[ $event == kill* ]]; then
        [[ $line == *"a peer failed or closed its connection"* ]] ||
          { fail "$name: the error does not say that a peer failed"; ok=0; }
      else
        [[ $line == *"got no answer within the collective timeout of $COLLECTIVE_TIMEOUT_S s (DCPP_COLLECTIVE_TIMEOUT_S)"* ]] ||
          { fail "$name: the error does not say no answer came within the timeout, naming its variable"; ok=0; }
      fi
    done <<<"$lines"
    if [[ $event == kill* && $lines != *"[${addr[i]}]"* ]]; then
      fail "$name: no error on node $n names the killed node's address ${addr[i]}"
      ok=0
    fi
  done
  ((ok)) && echo "ok   $name: errors $(ms_to_s "$first")-$(ms_to_s "$last") s after the $event (bound ${RANK_BOUND_S} s; ${SECONDS} s into the test)"
}

d="$t/shared"
mkdir -p "$d"

# 1. Save over 2 nodes x 2 ranks, verify, load over 3 ranks split 2+1.
pair save_2x2 2 2 save "$d/ckpt" 1
verify_ok "$d/ckpt"
pair load_2+1 2 1 load "$d/ckpt" 1

# 2. A node dies mid-save: into a new folder (node 1, not hosting the store), then over the
#    committed checkpoint (node 0: rank 0, the coordinator, and the store with it).
interrupt_save kill_new_folder kill1 "$d/ckpt2" 2
[[ ! -e $d/ckpt2/.metadata ]] || fail "kill_new_folder: $d/ckpt2/.metadata was committed"
verify_ok "$d/ckpt"
interrupt_save kill_resave kill0 "$d/ckpt" 2
verify_ok "$d/ckpt"
# 3. The link is cut mid-save: no connection is closed, so only the collective timeout ends it.
interrupt_save cut_link cut "$d/ckpt3" 2
[[ ! -e $d/ckpt3/.metadata ]] || fail "cut_link: $d/ckpt3/.metadata was committed"
ip -n "${ns[1]}" link set "${dev[1]}" up
pair load_after_kills 2 1 load "$d/ckpt" 1

echo "$fails failure(s)"
exit $((fails > 0))
