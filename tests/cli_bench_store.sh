#!/usr/bin/env bash
# actstore bench store: a small run (1 MiB tensors, one repeat) checks the
# JSON shape (docs/benchmarks.md), exact values of the lossless codecs, the ratios
# that do not depend on the machine, and the errors (exit 2 usage).
. "$(dirname "$0")/support/cli.sh"

"$BIN" bench store --mib 1 --repeats 1 --offload-dir "$dir" --json "$dir/s.json" \
  >"$dir/s.txt" 2>&1 || fail "bench exited $? ($(tail -1 "$dir/s.txt"))"
grep -q "^targets" "$dir/s.txt" || fail "no targets in the output"
python3 - "$dir/s.json" <<'PY' || fail "JSON contents"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["bench"] == "store"
rs = {(r["policy"], r["tensor"]): r for r in d["results"]}
pols = ["keep_adopt", "keep", "zstd", "fp16", "bf16", "q8", "q4", "q2", "offload", "memcpy"]
tens = ["relu", "softmax", "gaussian"]
extra = set(rs) - {(p, t) for p in pols for t in tens}
assert {(p, t) for p in pols for t in tens} <= set(rs), sorted(rs)
assert all(p.startswith("aq:") and t in tens for p, t in extra), sorted(extra)
for r in d["results"]:
    for k in ("bytes_raw", "bytes_stored", "save_gbps", "restore_gbps", "max_abs_err"):
        assert isinstance(r[k], (int, float)) and r[k] >= 0, (r["policy"], k, r[k])
    assert r["bytes_raw"] == 1 << 20
    assert r["save_gbps"] > 0 and r["restore_gbps"] > 0
for t in tens:
    for p in ("keep_adopt", "keep", "zstd", "offload", "memcpy"):
        assert rs[(p, t)]["max_abs_err"] == 0, (p, t)
    assert rs[("keep", t)]["bytes_stored"] == 1 << 20
    assert rs[("offload", t)]["bytes_stored"] == 0          # all in the file
    assert abs(rs[("fp16", t)]["bytes_raw"] / rs[("fp16", t)]["bytes_stored"] - 2) < 0.01
    assert 3.8 < rs[("q8", t)]["bytes_raw"] / rs[("q8", t)]["bytes_stored"] < 3.9
    assert 0 < rs[("q8", t)]["max_abs_err"] < 0.05
assert rs[("zstd", "relu")]["bytes_raw"] / rs[("zstd", "relu")]["bytes_stored"] >= 2
assert len(d["targets"]) == 4
PY
ls "$dir"/actstore-* >/dev/null 2>&1 && fail "offload files left behind"

"$BIN" bench store --help >/dev/null 2>&1 || fail "--help exited $?"
"$BIN" bench store --mib 0 >/dev/null 2>&1
[ $? -eq 2 ] || fail "--mib 0 should be a usage error (2)"
"$BIN" bench store --bogus >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown option should be a usage error (2)"

cli_done
