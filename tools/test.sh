#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds (with the CUDA backend when nvcc is
# present), and runs every test with CTest. Tests that need a GPU say they were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 1500
