#!/usr/bin/env bash
# actstore bench act: a small run (4097 elements, one repeat) checks the JSON
# shape (docs/benchmarks.md), the stored bytes of each policy (exact by their
# formulas), sign's and bitpack's exactness, fewbit's error falling with its
# bits, and the usage errors (exit 2).
. "$(dirname "$0")/support/cli.sh"

"$BIN" bench act --n 4097 --repeats 1 --json "$dir/a.json" >"$dir/a.txt" 2>&1 \
  || fail "bench exited $? ($(tail -1 "$dir/a.txt"))"
python3 - "$dir/a.json" <<'PY' || fail "JSON contents"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["bench"] == "act" and d["n"] == 4097
rs = {(r["case"], r["policy"]): r for r in d["results"]}
n, words = 4097, lambda bits: (4097 * bits + 63) // 64
assert rs[("relu", "keep")]["bytes_stored"] == 4 * n
for c in ("relu", "leaky"):
    assert rs[(c, "sign")]["bytes_stored"] == 16 + 8 * words(1)
    assert rs[(c, "sign")]["dx_rel_l2"] == 0
for b in (1, 2, 3, 4):
    assert rs[("gelu", f"fewbit:{b}")]["bytes_stored"] == 160 + 8 * words(b)
errs = [rs[("gelu", f"fewbit:{b}")]["dx_rel_l2"] for b in (1, 2, 3, 4)]
assert all(a > b for a, b in zip(errs, errs[1:])) and errs[2] < 0.1, errs
assert rs[("argmax", "bitpack")]["bytes_stored"] == 32 + 8 * words(2)
for r in d["results"]:
    assert r["save_ns_per_elem"] >= 0 and r["backward_ns_per_elem"] >= 0, r
PY
"$BIN" bench act --n 0 >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "--n 0 not a usage error"
"$BIN" bench act --frobnicate >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "unknown option not a usage error"
"$BIN" bench act --help | grep -q "fewbit" || fail "--help"

cli_done
