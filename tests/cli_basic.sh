#!/usr/bin/env bash
# The command's contract: --help everywhere, exit 0 / 1 failure / 2 usage.
. "$(dirname "$0")/support/cli.sh"
expect 2
expect 0 --help
expect 0 help
expect 0 version
expect 2 no-such-command
expect 2 bench
expect 0 bench --help
expect 2 bench no-such-bench
for c in train ab demo top bench; do expect 0 "$c" --help; done
"$BIN" version | grep -Eq '^actstore [0-9]+\.[0-9]+\.[0-9]+$' && ok \
  || fail "version output"
# the kernels line: backend, OpenBLAS core and how it was chosen; both
# overrides show through
"$BIN" version | grep -Eq '^kernels (onednn|builtin) \(.*\); OpenBLAS [A-Za-z0-9]+ \(' \
  && ok || fail "version kernels line"
AS_KERNELS=builtin "$BIN" version | grep -q '^kernels builtin ' \
  && ok || fail "AS_KERNELS=builtin not reported"
OPENBLAS_CORETYPE=Haswell "$BIN" version | grep -q 'OpenBLAS Haswell (OPENBLAS_CORETYPE)' \
  && ok || fail "OPENBLAS_CORETYPE not honoured"
# OpenMP's idle threads spin briefly, not libgomp's long default, unless the user chose
env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$BIN" version \
  | grep -q 'OpenMP wait spin 5000 (set by actstore)$' && ok || fail "GOMP_SPINCOUNT not set"
OMP_WAIT_POLICY=active "$BIN" version | grep -q 'OpenMP wait OMP_WAIT_POLICY$' \
  && ok || fail "the user's OMP_WAIT_POLICY not kept"
env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=10000 "$BIN" version \
  | grep -q 'OpenMP wait GOMP_SPINCOUNT$' && ok || fail "the user's GOMP_SPINCOUNT not kept"
cli_done
