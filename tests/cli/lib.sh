# Helpers of the CLI tests (sourced). Needs $DIR (a temp dir) set first.
# check DESCRIPTION EXPECTED_EXIT COMMAND...: runs it, output in $DIR/out and $DIR/err.
# contains DESCRIPTION FILE TEXT: the file holds the text.
pass=0; fail=0
check() {
  local what="$1" want="$2"; shift 2
  "$@" >"$DIR/out" 2>"$DIR/err"; local got=$?
  if [ "$got" = "$want" ]; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL: $what: exit $got, want $want"; cat "$DIR/out" "$DIR/err"; fi
}
contains() {
  if grep -qF -- "$3" "$2"; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL: $1: '$3' not in:"; cat "$2"; fi
}
