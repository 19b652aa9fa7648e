#!/usr/bin/env bash
# actstore bench softmax: capture real rows from a short vit run, bench them,
# check the JSON shape (docs/benchmarks.md) and the errors (exit 1 failure, 2 usage).
. "$(dirname "$0")/support/cli.sh"

"$BIN" bench softmax --capture vit --preset small --steps 3 --out "$dir/vit.rows" \
  --policies soa:5,sotk:16:3 --json "$dir/cap.json" >"$dir/cap.txt" 2>&1 \
  || fail "capture exited $? ($(tail -1 "$dir/cap.txt"))"
"$BIN" bench softmax --rows "$dir/vit.rows" --no-synthetic --quick \
  --policies keep,soa:5,sotk:16:3 --json "$dir/b.json" >"$dir/b.txt" 2>&1 \
  || fail "bench exited $? ($(tail -1 "$dir/b.txt"))"
python3 - "$dir/b.json" "$dir/cap.json" <<'EOF' || fail "JSON contents"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["bench"] == "softmax"
rs = {r["policy"]: r for r in d["results"]}
assert set(rs) == {"keep", "soa:5", "sotk:16:3"}, rs.keys()
for r in rs.values():
    assert r["rows"] == "vit", r["rows"]
    for k in ("ratio", "grad_cosine", "grad_rel_err", "encode_rows_per_s",
              "decode_rows_per_s"):
        assert isinstance(r[k], (int, float)) and r[k] >= 0, (k, r[k])
assert abs(rs["keep"]["ratio"] - 1) < 0.01 and rs["keep"]["grad_cosine"] > 0.999999
assert 2.0 < rs["soa:5"]["ratio"] < 2.2, rs["soa:5"]["ratio"]     # 44 + n bytes, n = 50
assert 8.9 < rs["sotk:16:3"]["ratio"] < 9.1, rs["sotk:16:3"]["ratio"]
assert rs["sotk:16:3"]["grad_cosine"] > 0.98, rs["sotk:16:3"]["grad_cosine"]
for r in rs.values():    # the store's metadata check, timed beside encode
    assert isinstance(r["check_frac_of_encode"], (int, float)), r
c = json.load(open(sys.argv[2]))
mg = {m["policy"]: m for m in c["model_grad"]}
assert set(mg) == {"soa:5", "sotk:16:3"}
for m in mg.values():
    assert 0.9 < m["model_grad_cosine"] <= 1.0 + 1e-9, m
    assert m["loss"] == m["loss_exact"], m    # forward is exact: P is used as computed
EOF

"$BIN" bench softmax --policies soa:0 --no-synthetic >/dev/null 2>&1
[[ $? -eq 2 ]] || fail "bad policy should exit 2"
printf 'not a dump' >"$dir/bad.rows"
"$BIN" bench softmax --rows "$dir/bad.rows" --no-synthetic --quick >"$dir/e.txt" 2>&1
[[ $? -eq 1 ]] || fail "bad rows file should exit 1"
grep -q "bad.rows" "$dir/e.txt" || fail "error names the file: $(cat "$dir/e.txt")"
"$BIN" bench softmax --capture vit >/dev/null 2>&1
[[ $? -eq 2 ]] || fail "--capture without --out should exit 2"

cli_done
