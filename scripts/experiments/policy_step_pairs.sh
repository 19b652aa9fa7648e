#!/usr/bin/env bash
# Step CPU time of policy specs against keep, alternating runs:
#   policy_step_pairs.sh MODEL ROUNDS STEPS [EXTRA_TRAIN_ARGS] -- SPEC...
# Each round runs keep, then every SPEC, `train --preset bench --threads 1`
# for STEPS steps; a run's figure is its median step thread-CPU time
# (time.step_cpu_ms_median). Prints per SPEC the ratio to the same round's
# keep run, per round and the median over rounds. Run from the repository root.
# cnn: keep runs on blocked activations, a spec whose policies need NCHW
# (invert, q4, auto, ...) on NCHW (docs/training.md, "Activation layout");
# AS_LAYOUT=nchw in the environment puts every run on NCHW, so the ratio
# measures the policy alone.
set -euo pipefail
BIN=${BIN:-./build/client/actstore}
m=$1 rounds=$2 steps=$3
shift 3
extra=()
while [[ $# -gt 0 && $1 != -- ]]; do extra+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
specs=("default=keep" "$@")
out=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
  for i in "${!specs[@]}"; do
    $BIN train --model "$m" --preset bench --steps "$steps" --threads 1 "${extra[@]}" \
      --policy "${specs[$i]}" --json "$out/r${r}_s$i.json" --quiet >/dev/null 2>&1
  done
done
python3 - "$out" "$rounds" "$m" "${specs[@]}" <<'PY'
import json, sys, statistics as st
out, rounds, m, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
t = [[json.load(open(f"{out}/r{r}_s{i}.json"))["time"]["step_cpu_ms_median"]
      for r in range(1, rounds + 1)] for i in range(len(specs))]
print(f"{m}: keep step {st.median(t[0]):.1f} ms (runs {[round(x, 1) for x in t[0]]})")
for i in range(1, len(specs)):
    rat = [b / a for a, b in zip(t[0], t[i])]
    print(f"{m}: {specs[i]}: step {st.median(t[i]):.1f} ms, ratio per round "
          f"{[round(x, 3) for x in rat]}, median {st.median(rat):.3f}")
PY
rm -rf "$out"
