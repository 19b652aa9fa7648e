#!/usr/bin/env bash
# actstore bench scale on its small grid (lm small: width 32, one block):
# the JSON shape and the plots (docs/benchmarks.md, "Scaling"), keep's
# memory rising with the context, keep's growth exponents in their
# documented ranges (softmax saved bytes ~ T^2 exactly, all saved bytes
# between T^1 and T^2), the compact policies below keep, and the fit
# search: the size it reports fits the budget (a probe passed with the
# arena peak under it), the next size it reports does not (a probe failed
# on the budget), and no probed size between them is missing. Usage errors
# exit 2; a bad policy spec exits 1 naming it.
set -u
BIN=${1:?usage: cli_bench_scale.sh path/to/actstore}
dir=$(mktemp -d "${TMPDIR:-/tmp}/as_cli_scale.XXXXXX")
trap 'rm -rf "$dir"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$BIN" bench scale --grid small --repeats 1 --quiet --json "$dir/s.json" >"$dir/s.txt" 2>&1 \
  || fail "sweep exited $? ($(tail -1 "$dir/s.txt"))"
grep -q "growth exponents" "$dir/s.txt" || fail "no exponents printed"
python3 - "$dir/s.json" <<'PY' || fail "sweep JSON contents"
import json, math, os, sys
d = json.load(open(sys.argv[1]))
assert d["bench"] == "scale" and d["mode"] == "sweep" and d["grid"] == "small", d
pols = [p["label"] for p in d["policies"]]
assert pols == ["keep", "sotk", "v5", "auto/10"], pols
pts = d["points"]
assert [p["axis"] for p in pts].count("context") == 4 and len(pts) == 8
fields = ("saved_stored_peak_bytes", "saved_raw_peak_bytes", "by_kind", "arena_peak_bytes",
          "tag_peak_bytes", "rss_peak_bytes", "step_cpu_ms", "step_cpu_ratio", "loss")
for p in pts:
    assert p["heads"] * 16 == p["width"], p
    assert [r["policy"] for r in p["results"]] == pols
    for r in p["results"]:
        for f in fields:
            assert f in r, (f, r)
        assert r["step_cpu_ms"] > 0 and r["rss_peak_bytes"] > r["arena_peak_bytes"] > 0, r
        assert r["saved_stored_peak_bytes"] <= r["tag_peak_bytes"]["saved"] + 4096, r
        assert math.isfinite(r["loss"]) and r["loss"] > 0, r
    keep = p["results"][0]
    assert keep["saved_stored_peak_bytes"] <= keep["saved_raw_peak_bytes"], keep
    assert keep["step_cpu_ratio"] == 1, keep
    for r in p["results"][1:]:
        assert r["saved_stored_peak_bytes"] < keep["saved_stored_peak_bytes"], (p, r)
        sm = r["by_kind"]["softmax_output"]
        assert sm["stored_peak_bytes"] * 4 < sm["raw_peak_bytes"], (p, r)
    auto = p["results"][3]
    assert 0 < auto["saved_stored_peak_bytes"] <= auto["saved_budget_bytes"], auto
    assert abs(auto["saved_budget_bytes"] - keep["saved_stored_peak_bytes"] / 10) < 2, auto
ctx = [p for p in pts if p["axis"] == "context"]
T = [p["context"] for p in ctx]
assert T == sorted(T) and len(set(T)) == 4, T
k = [p["results"][0] for p in ctx]
for key in ("saved_stored_peak_bytes", "arena_peak_bytes", "rss_peak_bytes"):
    v = [r[key] for r in k]
    assert all(a < b for a, b in zip(v, v[1:])), (key, v)
sm = [r["by_kind"]["softmax_output"]["raw_peak_bytes"] for r in k]
# keep's softmax: depth * B * heads * T * T * 4 bytes, exactly
assert all(s == 1 * 2 * 2 * t * t * 4 for s, t in zip(sm, T)), (sm, T)
ex = {(e["axis"], e["policy"]): e for e in d["exponents"]}
ek = ex[("context", "keep")]
assert 1.99 <= ek["softmax"]["all"] <= 2.01, ek
assert 1.0 < ek["saved"]["all"] < 2.0 and ek["saved"]["last_two"] > ek["saved"]["all"], ek
assert 0.95 <= ex[("batch", "keep")]["saved"]["all"] <= 1.05, ex[("batch", "keep")]
assert len(d["plots"]) == 6, d["plots"]
for f in d["plots"]:
    s = open(f).read()
    assert s.startswith("<svg") and s.rstrip().endswith("</svg>") and "polyline" in s, f
PY
for f in "$dir"/s-{context,width,batch}-{memory,time}.svg; do
  [ -s "$f" ] || fail "plot $f missing"
done

budget=$((1200 * 1024))
"$BIN" bench scale --grid small --fit $budget --max-context 512 --quiet \
  --policy "sotk=softmax=sotk:16:3; default=keep" --json "$dir/f.json" >"$dir/f.txt" 2>&1 \
  || fail "fit exited $? ($(tail -1 "$dir/f.txt"))"
python3 - "$dir/f.json" $budget <<'PY' || fail "fit JSON contents"
import json, sys
d, budget = json.load(open(sys.argv[1])), int(sys.argv[2])
assert d["mode"] == "fit" and d["fit_budget_bytes"] == budget
assert [f["policy"] for f in d["fit"]] == ["keep", "sotk"]
for f in d["fit"]:
    for axis in ("context", "batch"):
        a = f[axis]
        assert a["fits"] > 0 and a["next"] > a["fits"], a
        assert a["arena_peak_bytes"] <= budget, a
        pr = {p[axis]: p for p in a["probes"]}
        assert pr[a["fits"]]["fits"] and pr[a["fits"]]["arena_peak_bytes"] <= budget, a
        assert not pr[a["next"]]["fits"] and "budget" in pr[a["next"]]["error"], a
        # every probe agrees with the answer: sizes up to fits fit, from next on do not
        for v, p in pr.items():
            assert p["fits"] == (v <= a["fits"]), (v, p, a)
        q = 16 if axis == "context" else 1
        assert a["next"] - a["fits"] <= max(q, a["fits"] // 16), a
keep, sotk = d["fit"]
assert sotk["context"]["fits"] >= keep["context"]["fits"], d["fit"]
assert abs(sotk["context"]["ratio_to_keep"] - sotk["context"]["fits"] / keep["context"]["fits"]) < 1e-9
PY

code() { "$BIN" bench scale "$@" >/dev/null 2>&1; echo $?; }
[[ $(code --grid bogus) -eq 2 ]] || fail "--grid bogus not a usage error"
[[ $(code --fit 0) -eq 2 ]] || fail "--fit 0 not a usage error"
[[ $(code --steps 9) -eq 2 ]] || fail "--steps 9 not a usage error"
[[ $(code --fit-axis sideways) -eq 2 ]] || fail "--fit-axis sideways not a usage error"
[[ $(code --policy nolabel) -eq 2 ]] || fail "--policy without LABEL= not a usage error"
[[ $(code --frobnicate 1) -eq 2 ]] || fail "unknown option not a usage error"
"$BIN" bench scale --grid small --repeats 1 --quiet --policy "bad=softmax=bogus:1" \
  >"$dir/b.txt" 2>&1
rc=$?
[[ $rc -eq 1 ]] || fail "bad spec exited $rc, not 1"
grep -q "bogus" "$dir/b.txt" || fail "bad spec message does not name it: $(cat "$dir/b.txt")"
"$BIN" bench scale --help | grep -q -- "--fit BYTES" || fail "--help"

echo "$fails failed"
[ "$fails" -eq 0 ]
