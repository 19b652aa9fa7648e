#!/usr/bin/env bash
# The command's contract: --help everywhere, exit 0 / 1 failure / 2 usage.
set -u
BIN=${1:?usage: cli_basic.sh path/to/actstore}
fails=0; passes=0
expect() { # expect CODE -- args...
  local want=$1; shift
  "$BIN" "$@" >/dev/null 2>&1
  local got=$?
  if [[ $got -ne $want ]]; then
    echo "FAIL: actstore $* exited $got, expected $want"; fails=$((fails+1))
  else
    passes=$((passes+1))
  fi
}
expect 2
expect 0 --help
expect 0 help
expect 0 version
expect 2 no-such-command
expect 2 bench
expect 0 bench --help
expect 2 bench no-such-bench
for c in train ab demo top bench; do expect 0 "$c" --help; done
"$BIN" version | grep -Eq '^actstore [0-9]+\.[0-9]+\.[0-9]+$' && passes=$((passes+1)) \
  || { echo "FAIL: version output"; fails=$((fails+1)); }
# the kernels line: backend, OpenBLAS core and how it was chosen; both
# overrides show through
"$BIN" version | grep -Eq '^kernels (onednn|builtin) \(.*\); OpenBLAS [A-Za-z0-9]+ \(' \
  && passes=$((passes+1)) || { echo "FAIL: version kernels line"; fails=$((fails+1)); }
AS_KERNELS=builtin "$BIN" version | grep -q '^kernels builtin ' \
  && passes=$((passes+1)) || { echo "FAIL: AS_KERNELS=builtin not reported"; fails=$((fails+1)); }
OPENBLAS_CORETYPE=Haswell "$BIN" version | grep -q 'OpenBLAS Haswell (OPENBLAS_CORETYPE)' \
  && passes=$((passes+1)) || { echo "FAIL: OPENBLAS_CORETYPE not honoured"; fails=$((fails+1)); }
echo "$passes passed, $fails failed"
[[ $fails -eq 0 ]]
