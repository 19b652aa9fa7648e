#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) and build actstore.
# Idempotent: installs only missing packages, reuses the build folder.
#   scripts/setup.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
shift || true

PACKAGES=(
  build-essential cmake pkg-config git
  libjemalloc-dev libuv1-dev libzstd-dev libcmocka-dev libopenblas-dev libdnnl-dev
  zlib1g-dev libcjson-dev node-llhttp
  dataset-fashion-mnist fortunes fortunes-min
)
# Node.js and npm only fetch uPlot at setup time. Many machines already have
# a Node.js whose package bundles npm (and conflicts with Debian's npm), so
# install Debian's only when there is no npm at all.
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
# Test-time tools (Prometheus' promtool and server, headless Chromium, and
# clang with libFuzzer for the fuzz targets: scripts/fuzz.sh).
if [[ "${AS_SETUP_TEST_TOOLS:-0}" == 1 ]]; then
  PACKAGES+=(prometheus chromium clang libclang-rt-14-dev)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# uPlot for the dashboard, pinned in store/service/web/package-lock.json and
# embedded into the binary at build time.
if [[ -f store/service/web/package.json && ! -f store/service/web/node_modules/uplot/package.json ]]; then
  echo "setup: npm ci (uPlot)"
  (cd store/service/web && npm ci --no-audit --no-fund --loglevel=error)
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
