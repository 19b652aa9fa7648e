#!/usr/bin/env bash
# docs/integration.md's example trainer (tests/example/integration.c), both
# framework shapes: with an approximating softmax policy the arena peak is
# lower than with keep by at least what the store saves on softmax outputs
# (raw - stored peak of that kind, jemalloc size classes aside), and
# training still works (loss falls, within a few percent of keep's).
. "$(dirname "$0")/support/cli.sh"
EX=$(cd "$(dirname "$BIN")/.." && pwd)/tests/integration_example
for shape in layers slab; do
  for pol in "default=keep" "softmax=sotk:16:3; default=keep" "softmax=soa:5; default=keep"; do
    "$EX" --shape "$shape" --policy "$pol" >>"$dir/$shape.jsonl" 2>"$dir/err" \
      || fail "$shape '$pol' exited $? ($(tail -1 "$dir/err"))"
  done
  python3 - "$dir/$shape.jsonl" <<'PY' && passes=$((passes + 1)) || fail "$shape: peaks or losses"
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
assert len(rs) == 3, rs
keep = rs[0]
assert keep["softmax_raw_peak_bytes"] == keep["softmax_stored_peak_bytes"] > 0, keep
assert keep["loss_last"] < 0.9 * keep["loss_first"], keep
for r in rs[1:]:
    saved = r["softmax_raw_peak_bytes"] - r["softmax_stored_peak_bytes"]
    drop = keep["arena_peak_bytes"] - r["arena_peak_bytes"]
    print("%-6s %-32s arena peak %8d (keep %8d): drop %8d, softmax raw - stored %8d, loss %.4f -> %.4f (keep %.4f)"
          % (r["shape"], r["policy"], r["arena_peak_bytes"], keep["arena_peak_bytes"],
             drop, saved, r["loss_first"], r["loss_last"], keep["loss_last"]))
    assert saved > 0.5 * keep["softmax_raw_peak_bytes"], r
    # The arena counts usable sizes, the store requested ones: jemalloc's
    # size classes round a request up by under 1/4. The slab shape's P
    # block of the layer being saved is the encode's input, live until the
    # save returns (keep adopts it instead): one layer of P (B*T*T floats).
    slack = r["softmax_stored_peak_bytes"] / 4
    if r["shape"] == "slab":
        slack += keep["softmax_raw_peak_bytes"] / 4     # 4 layers
    assert drop >= saved - slack, (drop, saved, slack)
    assert abs(r["loss_first"] - keep["loss_first"]) <= 1e-6 * keep["loss_first"], r
    assert abs(r["loss_last"] - keep["loss_last"]) <= 0.05 * keep["loss_last"], r
PY
done
# a usage error is exit 2
"$EX" --shape ring >/dev/null 2>&1; [[ $? == 2 ]] || fail "bad --shape not exit 2"
cli_done
