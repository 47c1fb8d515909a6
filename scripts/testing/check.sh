# Shared by the command-line tools' sh_tests: source it, call `check`, and `exit $fails`.
#
#   check NAME RC PATTERN -- COMMAND...
# runs COMMAND, passes when it exits RC and its output (stdout and stderr, left in $out)
# matches the grep PATTERN; prints "ok   NAME" or "FAIL NAME" with the output, counting
# failures in $fails.
fails=0
out=""
check() {
  local name=$1 want=$2 pattern=$3 rc
  shift 4
  out=$("$@" 2>&1) && rc=0 || rc=$?
  if [[ $rc == "$want" ]] && grep -q -- "$pattern" <<<"$out"; then
    echo "ok   $name"
    return 0
  fi
  printf 'FAIL %s: rc=%s (want %s), output:\n%s\n' "$name" "$rc" "$want" "$out"
  fails=$((fails + 1))
}
