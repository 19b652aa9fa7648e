# Sourced first by the shell tests of the command (tests/cli_*.sh), run as
# `bash tests/cli_NAME.sh path/to/actstore`: BIN (the command), dir (a
# scratch directory removed at exit), pass / fail counters, and cli_done to
# end with the counts and the exit status.
set -u
BIN=${1:?usage: $(basename "$0") path/to/actstore}
dir=$(mktemp -d "${TMPDIR:-/tmp}/as_$(basename "$0" .sh).XXXXXX")
trap 'rm -rf "$dir"' EXIT
fails=0 passes=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { passes=$((passes + 1)); }
# expect CODE args...: the command exits with CODE (output in $dir/out, $dir/err).
expect() {
  local want=$1; shift
  "$BIN" "$@" >"$dir/out" 2>"$dir/err"
  local got=$?
  if [[ $got -ne $want ]]; then
    fail "actstore $* exited $got, expected $want: $(head -c 300 "$dir/err")"
  else
    ok
  fi
}
cli_done() { echo "$passes passed, $fails failed"; [[ $fails -eq 0 ]]; }
