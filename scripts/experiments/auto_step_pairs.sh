#!/usr/bin/env bash
# Alternating keep / auto pairs: step CPU medians (thread CPU), one BLAS thread.
BIN=${BIN:-./build/client/actstore}   # run from the repository root
for m in vit lm cnn; do
  for r in 1 2 3; do
    for arm in keep auto; do
      if [[ $arm == keep ]]; then extra=(--policy default=keep); else extra=(--policy default=auto --ratio 10); fi
      $BIN train --model $m --preset bench --steps 80 --threads 1 "${extra[@]}" --json /tmp/p_${m}_${arm}_$r.json --quiet 2>/dev/null
    done
  done
  python3 - "$m" <<'PY'
import json, sys, statistics as st
m = sys.argv[1]
k = [json.load(open(f"/tmp/p_{m}_keep_{r}.json"))["time"]["step_cpu_ms_median"] for r in (1, 2, 3)]
a = [json.load(open(f"/tmp/p_{m}_auto_{r}.json"))["time"]["step_cpu_ms_median"] for r in (1, 2, 3)]
rat = [y / x for x, y in zip(k, a)]
print(f"{m}: keep {st.median(k):.1f} ms, auto {st.median(a):.1f} ms, ratio per pair {[round(x,3) for x in rat]}, median {st.median(rat):.3f}")
PY
done
