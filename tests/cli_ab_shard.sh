#!/usr/bin/env bash
# actstore ab --shard I/N and ab merge: three shards of a 3-seed comparison,
# merged, give the report of the unsharded run (every figure to the bit,
# step times aside: they are measured, not computed); a report split into
# shards by hand merges back to itself exactly, step times included; and
# the merge refuses what does not add up (exit 1), bad --shard is usage
# (exit 2); ab --convs reaches the cnn and its report.
. "$(dirname "$0")/support/cli.sh"
# cut_report DIR N PREFIX: cut DIR/report.json (N seeds) by hand into N
# one-seed shards PREFIX0 .. PREFIX{N-1}
cut_report() {
  python3 - "$@" <<'PY'
import json, os, sys
src, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
full = json.load(open(src + "/report.json"))
for i in range(n):
    d = json.loads(json.dumps(full))
    d["seeds"] = [full["seeds"][i]]
    for arm in d["arms"]:
        arm["runs"] = [arm["runs"][i]]
    d["shard"] = {"index": i + 1, "count": n, "seed0": 1, "seeds_total": n}
    os.makedirs("%s%d" % (prefix, i))
    json.dump(d, open("%s%d/report.json" % (prefix, i), "w"))
PY
}
cd "$dir"
AB=(ab --model vit --a default=keep --b "softmax=sotk:16:3; default=keep" --seeds 3
    --steps 12 --check-every 4 --threads 1 --quiet)
"$BIN" "${AB[@]}" --out full >full.txt 2>&1 || fail "unsharded run exited $? ($(tail -1 full.txt))"
for i in 1 2 3; do
  "$BIN" "${AB[@]}" --shard "$i/3" --out "s$i" >"s$i.txt" 2>&1 \
    || fail "shard $i/3 exited $? ($(tail -1 "s$i.txt"))"
done
"$BIN" ab merge s3 s1 s2 --out merged >merge.txt 2>&1 || fail "merge exited $? ($(tail -1 merge.txt))"
python3 - <<'PY' && ok || fail "merged report differs from the unsharded one"
import json
full = json.load(open("full/report.json")); merged = json.load(open("merged/report.json"))
for i, s in enumerate(("s1", "s2", "s3")):
    d = json.load(open(s + "/report.json"))
    assert d["shard"] == {"index": i + 1, "count": 3, "seed0": 1, "seeds_total": 3}, d["shard"]
    assert d["seeds"] == [i + 1], d["seeds"]
assert "shard" not in merged and merged["seeds"] == [1, 2, 3]
def strip(d):
    d = dict(d)
    for k in ("started", "wall_s", "verdict"):
        d.pop(k)
    d["paired"] = {k: v for k, v in d["paired"].items() if v["unit"] != "ms"}
    for arm in d["arms"]:
        for r in arm["runs"]:
            r.pop("step_ms"); r.pop("step_ms_median")
    return d
a, b = strip(full), strip(merged)
for k in a:
    assert a[k] == b[k], k
assert a == b
assert len(a["paired"]) >= 8 and a["paired"]["softmax_output"]["pairs"] == 3
PY
# a report cut into shards by hand merges back to itself, timing included
cut_report full 3 cut || fail "splitting the report"
"$BIN" ab merge cut0 cut1 cut2 --out back >back.txt 2>&1 || fail "merge of the cut report exited $?"
python3 - <<'PY' && ok || fail "cut and merged report differs"
import json
a = json.load(open("full/report.json")); b = json.load(open("back/report.json"))
for k in ("started", "wall_s"):
    a.pop(k); b.pop(k)
assert a == b, [k for k in a if a[k] != b.get(k)]
PY
# refusals: a missing shard, a shard twice, another comparison
"$BIN" ab merge s1 s2 --out x >x.txt 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "seed 3 missing: its shard 3/3" x.txt && ok || fail "missing shard: exit $rc: $(cat x.txt)"
"$BIN" ab merge s1 s1 s2 s3 --out x >x.txt 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "seed 1 appears twice" x.txt && ok || fail "duplicate shard: exit $rc: $(cat x.txt)"
"$BIN" ab merge full s1 --out x >x.txt 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "not a shard" x.txt && ok || fail "unsharded part: exit $rc: $(cat x.txt)"
sed -i 's/sotk:16:3/sotk:8:2/' s2/report.json
"$BIN" ab merge s1 s2 s3 --out x >x.txt 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "spec B" x.txt && ok || fail "other spec: exit $rc: $(cat x.txt)"
"$BIN" ab merge nowhere --out x >x.txt 2>&1; rc=$?
[[ $rc == 1 ]] && grep -q "nowhere/report.json" x.txt && ok || fail "missing folder: exit $rc"
for bad in 0/3 4/3 3 a/b 2/1 1/65; do
  "$BIN" "${AB[@]}" --shard "$bad" --out x >x.txt 2>&1; rc=$?
  [[ $rc == 2 ]] || fail "--shard $bad: exit $rc, expected 2"
done
"$BIN" "${AB[@]}" --seeds 2 --shard 3/3 --out x >x.txt 2>&1; rc=$?
[[ $rc == 2 ]] && grep -q "N <= --seeds" x.txt && ok || fail "more shards than seeds: exit $rc: $(cat x.txt)"
# an auto arm's budget and plan survive the cut and the merge
"$BIN" ab --model vit --a default=keep --b default=auto --ratio 10 --seeds 2 --steps 3 \
    --check-every 0 --threads 1 --quiet --out auto >auto.txt 2>&1 \
  || fail "auto run exited $? ($(tail -1 auto.txt))"
cut_report auto 2 acut || fail "splitting the auto report"
"$BIN" ab merge acut1 acut0 --out aback >aback.txt 2>&1 || fail "merge of the auto report exited $?"
python3 - <<'PY' && ok || fail "auto plan lost in the merge"
import json
a = json.load(open("auto/report.json")); b = json.load(open("aback/report.json"))
for s in range(2):
    ra, rb = a["arms"][1]["runs"][s], b["arms"][1]["runs"][s]
    assert ra["saved_budget_bytes"] > 0 and ra["plan"]["active"]
    assert ra["saved_budget_bytes"] == rb["saved_budget_bytes"]
    assert ra["plan"] == rb["plan"], (ra["plan"], rb["plan"])
    assert "plan" not in b["arms"][0]["runs"][s]
PY
# --convs: cnn only, 1..5; the runs have that many convs per stage
expect 2 ab --model vit --convs 2 --a default=keep --b default=keep
expect 2 ab --model cnn --convs 0 --a default=keep --b default=keep
expect 0 ab --model cnn --act leaky --convs 2 --steps 2 --seeds 1 --check-every 0 --threads 1 \
    --a default=keep --b "conv_input=invert; default=keep" --quiet --out convs
python3 - <<'PY' && ok || fail "ab --convs 2 not in the report"
import json
r = json.load(open("convs/report.json"))
assert r["options"] == "act=leaky convs=2", r["options"]
PY
cli_done
