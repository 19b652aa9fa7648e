#!/usr/bin/env bash
# README command 1: set up, build and run the main job (actstore demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
exec ./build/client/actstore demo "$@"
