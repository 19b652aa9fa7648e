#!/usr/bin/env bash
# README command 2: set up (with the test-time tools), build and run the tests.
#   scripts/test.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
shift || true
AS_SETUP_TEST_TOOLS=1 bash scripts/setup.sh "$BUILD_DIR" -DAS_WERROR=ON "$@"
cd "$BUILD_DIR"
ctest --output-on-failure -j2
