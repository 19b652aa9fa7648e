#!/usr/bin/env bash
# Build the libFuzzer targets (fuzz/, clang with address and undefined
# sanitizers) and run each for a bounded time on its seed corpus.
#   scripts/fuzz.sh [BUILD_DIR] [SECONDS_PER_TARGET]
# New inputs that raise coverage go to BUILD_DIR/corpus/<target>/ (the seeds
# in fuzz/corpus/ stay as they are); a crash leaves crash-* in BUILD_DIR and
# fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build-fuzz}
SECS=${2:-60}
TARGETS="spec zstd http codec"
CC=clang cmake -S . -B "$BUILD_DIR" -DAS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAS_BUILD_TESTS=OFF -DAS_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j2 --target $(printf 'fuzz_%s ' $TARGETS)
for t in $TARGETS; do
  mkdir -p "$BUILD_DIR/corpus/$t"
  echo "fuzz_$t: ${SECS} s"
  (cd "$BUILD_DIR" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz/fuzz_$t -max_total_time="$SECS" -print_final_stats=1 -max_len=4096 \
      "corpus/$t" "../fuzz/corpus/$t" 2>&1 | grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|ERROR|SUMMARY" || true)
  if [[ -n "$(find "$BUILD_DIR" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' \
              -o -name 'timeout-*' -o -name 'oom-*' \))" ]]; then
    echo "fuzz_$t: crash input(s) in $BUILD_DIR" >&2
    exit 1
  fi
done
