#!/usr/bin/env bash
# Conv inversion step time against keep: alternating runs, step CPU medians
# (thread CPU), one BLAS thread, cnn bench preset with LeakyReLU.
#   bench: one conv per stage, conv_input=invert
#   chain: two convs per stage (--convs 2), the chain spec
# BIN2 (optional): a second build's binary, run as a third arm (e.g. main's);
# SPEC2 (optional): the third arm's policy instead of the preset's (e.g. the
# chain with every input solved: invert::::solve), with BIN2 or this binary.
BIN=${BIN:-./build/client/actstore}   # run from the repository root
STEPS=${STEPS:-300}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-/tmp/conv_pairs}
mkdir -p "$OUT"
CHAIN="conv_input=invert; norm_input=inverse; activation_input=inverse; default=keep"
run() {   # name binary convs policy round
  "$2" train --model cnn --preset bench --act leaky --convs "$3" --steps "$STEPS" \
    --threads 1 --policy "$4" --json "$OUT/$1_$5.json" --quiet 2>/dev/null
}
for preset in ${PRESETS:-bench chain}; do
  if [[ $preset == bench ]]; then convs=1; spec="conv_input=invert; default=keep"; else convs=2; spec=$CHAIN; fi
  arms="keep inv"
  [[ -n $BIN2 || -n $SPEC2 ]] && arms="keep inv inv2"
  for r in $(seq 1 "$ROUNDS"); do
    run "${preset}_keep" "$BIN" $convs "default=keep" $r
    run "${preset}_inv" "$BIN" $convs "$spec" $r
    [[ -n $BIN2 || -n $SPEC2 ]] && run "${preset}_inv2" "${BIN2:-$BIN}" $convs "${SPEC2:-$spec}" $r
  done
  python3 - "$OUT" "$preset" "$ROUNDS" $arms <<'PY'
import json, sys, statistics as st
out, preset, rounds, arms = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
t = {a: [json.load(open(f"{out}/{preset}_{a}_{r}.json")) for r in range(1, rounds + 1)] for a in arms}
ms = {a: [d["time"]["step_cpu_ms_median"] for d in t[a]] for a in arms}
for a in arms:
    rat = [y / x for x, y in zip(ms["keep"], ms[a])]
    m = t[a][0]["memory"]
    print(f"{preset} {a}: step CPU ms {[round(x, 2) for x in ms[a]]} median {st.median(ms[a]):.2f}; "
          f"vs keep per pair {[round(x, 3) for x in rat]} median {st.median(rat):.3f}; "
          f"conv_input stored peak {m['by_kind']['conv_input']['stored_peak_bytes']} B, "
          f"saved peak {m['saved_stored_peak_bytes']} B, fallbacks {m['fallbacks']}")
PY
done
