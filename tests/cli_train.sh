#!/usr/bin/env bash
# actstore train: usage errors (exit 2), data errors (exit 1, naming the path
# and the package), the JSON fields (docs/training.md), bit-for-bit identical loss
# curves for the same seed, plain progress lines when not on a terminal,
# SIGTERM / SIGINT ending a run with partial JSON and no offload file left,
# and actstore bench layers' JSON. Small preset, a few steps: seconds.
. "$(dirname "$0")/support/cli.sh"
expect 0 train --help
expect 2 train
expect 2 train --model cnn
expect 2 train --policy default=keep
expect 2 train --model rnn --policy default=keep
expect 2 train --model cnn --policy default=keep --preset huge
expect 2 train --model cnn --policy "default=nosuch" --steps 1
grep -q "nosuch" "$dir/err" && ok || fail "fail policy message: $(cat "$dir/err")"
expect 2 train --model cnn --policy default=keep --steps 0
expect 2 train --model cnn --policy default=keep --steps 3 --epochs 1
expect 2 train --model cnn --policy default=keep --lr -1
expect 2 train --model cnn --policy default=keep --steps abc
expect 2 train --model cnn --policy default=keep --frobnicate 1
expect 2 train --model cnn --policy default=keep --act tanh
expect 2 train --model vit --policy default=keep --act leaky
expect 0 train --model cnn --policy default=keep --act leaky --steps 3 --quiet
expect 1 train --model cnn --policy default=keep --steps 2 --data-dir "$dir/none"
grep -q "$dir/none/train-images-idx3-ubyte.gz" "$dir/err" && grep -q "dataset-fashion-mnist" "$dir/err" \
  && ok || fail "missing data message: $(cat "$dir/err")"
expect 1 train --model lm --policy default=keep --steps 2 --text-dir "$dir/none"
grep -q "fortunes" "$dir/err" && ok || fail "missing text message: $(cat "$dir/err")"

# JSON fields, and determinism through the command
for run in a b; do
  expect 0 train --model vit --policy "default=keep" --steps 6 --seed 7 --json "$dir/$run.json"
done
expect 0 train --model vit --policy "default=keep" --steps 6 --seed 8 --json "$dir/c.json"
python3 - "$dir" <<'EOF' && ok || fail "train JSON checks"
import json, sys
t = sys.argv[1]
a, b, c = (json.load(open(f"{t}/{r}.json")) for r in "abc")
for k in ["model", "policy", "seed", "steps", "loss_curve", "final_train_loss",
          "eval", "memory", "time"]:
    assert k in a, k
m = a["memory"]
for k in ["saved_stored_peak_bytes", "saved_raw_peak_bytes", "by_kind",
          "arena_peak_bytes", "rss_peak_bytes"]:
    assert k in m, k
assert "softmax_output" in m["by_kind"], m["by_kind"].keys()
for kind in m["by_kind"].values():
    assert kind["stored_peak_bytes"] >= 0 and kind["raw_peak_bytes"] > 0
# keep: everything but the batch images, which are borrowed (0 bytes)
assert 0 < m["saved_raw_peak_bytes"] - m["saved_stored_peak_bytes"] <= a["batch"] * 784 * 4
assert m["arena_peak_bytes"] >= m["saved_stored_peak_bytes"]
assert m["rss_peak_bytes"] > m["arena_peak_bytes"]
assert a["time"]["step_ms_median"] > 0 and a["time"]["total_s"] > 0
assert 0 <= a["eval"]["accuracy"] <= 1 and a["eval"]["loss"] > 0
assert a["model"] == "vit" and a["seed"] == 7 and a["steps"] == 6
assert [p[0] for p in a["loss_curve"]] == list(range(1, 7))
assert a["loss_curve"] == b["loss_curve"], "same seed, different losses"
assert a["loss_curve"] != c["loss_curve"], "different seed, same losses"
assert a["eval"] == b["eval"]
EOF

# a stochastic-rounding policy repeats too, run to run
for run in q1 q2; do
  expect 0 train --model cnn --policy "default=q4" --steps 8 --seed 3 --quiet --json "$dir/$run.json"
done
python3 -c "
import json; a, b = (json.load(open('$dir/%s.json' % r)) for r in ('q1', 'q2'))
assert a['loss_curve'] == b['loss_curve']
assert a['memory']['saved_stored_peak_bytes'] < a['memory']['saved_raw_peak_bytes'] / 4
" && ok || fail "q4 determinism across processes"

# lm: held-out loss instead of accuracy; plain progress lines off a terminal
expect 0 train --model lm --policy "softmax=keep; default=keep" --steps 3 --json -
python3 -c "
import json,sys; j=json.load(open('$dir/out'))
assert 'accuracy' not in j['eval'] and j['eval']['loss'] > 0, j['eval']
" && ok || fail "lm JSON on stdout"
grep -q "^step 1/3 loss" "$dir/err" && ! grep -q $'\r' "$dir/err" && ok \
  || fail "plain progress lines: $(head -c 300 "$dir/err")"

# SIGTERM / SIGINT: the run ends after the current step with the partial
# JSON written (exit 1), and no offload file is left in the directory
for sig in TERM INT; do
  mkdir -p "$dir/off$sig"
  "$BIN" train --model cnn --policy "default=offload:$dir/off$sig" --steps 100000 \
    --json "$dir/part$sig.json" >"$dir/pout" 2>"$dir/perr" &
  pid=$!
  for _ in $(seq 300); do grep -q "^step 1/" "$dir/perr" && break; sleep 0.1; done
  kill -$sig $pid
  wait $pid; code=$?
  [[ $code -eq 1 ]] && ok || fail "SIG$sig: exit $code: $(tail -c 300 "$dir/perr")"
  python3 -c "
import json; j=json.load(open('$dir/part$sig.json'))
assert j['partial']['planned_steps'] == 100000 and 1 <= j['steps'] < 100000, j.get('partial')
assert len(j['loss_curve']) == j['steps'] and 'eval' not in j
" && ok || fail "SIG$sig: partial JSON"
  grep -q "interrupted" "$dir/perr" && ok || fail "SIG$sig: no message"
  [[ -z "$(ls -A "$dir/off$sig")" ]] && ok || fail "SIG$sig: files left: $(ls "$dir/off$sig" | head -3)"
done

# auto within a budget: --budget / --ratio usage, the plan in the JSON and
# on stderr, the saved peak within the budget, an impossible budget fails
# naming the smallest reachable one
expect 2 train --model vit --policy default=auto --budget 0
expect 2 train --model vit --policy default=auto --budget 12X
expect 2 train --model vit --policy default=auto --ratio 0
expect 2 train --model vit --policy default=auto --budget 1M --ratio 10
expect 0 train --model vit --policy default=auto --ratio 10 --steps 4 --json "$dir/auto.json"
grep -q "auto plan" "$dir/err" && grep -q "linear_input" "$dir/err" && ok \
  || fail "plan table on stderr: $(head -c 300 "$dir/err")"
python3 -c "
import json; j=json.load(open('$dir/auto.json')); m=j['memory']; p=j['plan']
b=m['saved_budget_bytes']
assert b > 0 and abs(b - p['keep_bytes'] / 10) <= 1, (b, p['keep_bytes'])
assert m['saved_stored_peak_bytes'] <= b, (m['saved_stored_peak_bytes'], b)
assert p['active'] and p['feasible'] and p['planned_bytes'] <= b
assert len(p['layers']) > 5
for e in p['layers']:
    assert set(['layer','kind','policy','raw_bytes','stored_bytes','rel_error','cosine']) <= set(e)
    assert e['stored_bytes'] <= e['raw_bytes']
" && ok || fail "auto JSON"
# the cnn declares its pooled conv inputs derivable; auto plans them as
# ordinary tensors and fits a tenth of keep from the first step
for act in relu leaky; do
  expect 0 train --model cnn --act $act --preset bench --policy default=auto --ratio 10 --steps 2 --quiet \
    --json "$dir/auto_cnn.json"
  python3 -c "
import json; m=json.load(open('$dir/auto_cnn.json'))['memory']
assert 0 < m['saved_stored_peak_bytes'] <= m['saved_budget_bytes'], m
" && ok || fail "auto cnn ($act) within its budget"
done
expect 0 train --model vit --policy default=auto --budget 600K --steps 2 --quiet --json "$dir/auto2.json"
python3 -c "
import json; j=json.load(open('$dir/auto2.json'))
assert j['memory']['saved_budget_bytes'] == 600 * 1024
assert j['memory']['saved_stored_peak_bytes'] <= 600 * 1024
" && ok || fail "auto --budget 600K JSON"
expect 1 train --model vit --policy default=auto --budget 1K --steps 2 --quiet
grep -q "smallest budget auto can reach is [0-9]* bytes" "$dir/err" && ok \
  || fail "impossible budget message: $(head -c 300 "$dir/err")"

# bench layers: its JSON has conv and matmul next to sgemm
expect 0 bench layers --reps 1 --json "$dir/bl.json"
python3 -c "
import json; j=json.load(open('$dir/bl.json'))
assert j['sgemm_peak']['gflops'] > 0
assert len(j['conv']) >= 3 and len(j['matmul']) == 8
for c in j['conv']: assert c['fwd_gflops'] > 0 and c['fwd_sgemm_gflops'] > 0
for c in j['conv']:   # the backward's halves against the library's, where it ran
    if 'fwd_lib_gflops' in c and c['bwd_includes_dx']:
        assert c['bwd_data_over_lib'] > 0 and c['bwd_weights_over_lib'] > 0
assert any('bwd_data_over_lib' in c for c in j['conv']) or not any('fwd_lib_gflops' in c for c in j['conv'])
assert j['conv_total']['fwd_over_peak'] > 0
assert j['conv_layout'] in ('blocked', 'nchw')
" && ok || fail "bench layers JSON"
expect 2 bench layers --reps 0
expect 2 bench layers --layout nhwc
AS_LAYOUT=nhwc expect 2 bench layers --reps 1
# the cnn's activation layout: configured, overridden, recorded; a bad one named
AS_LAYOUT=blocked expect 0 train --model cnn --policy default=keep --steps 2 --quiet \
  --json "$dir/lay.json"
python3 -c "
import json; j=json.load(open('$dir/lay.json'))
assert j['config']['layout'] == 'blocked', j['config']
" && ok || fail "train JSON config.layout"
AS_LAYOUT=nhwc expect 1 train --model cnn --policy default=keep --steps 2 --quiet
grep -q "AS_LAYOUT=nhwc: expected blocked or nchw" "$dir/err" && ok \
  || fail "bad AS_LAYOUT message: $(head -c 300 "$dir/err")"

cli_done
