#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds (with the CUDA backend when nvcc is
# present), and runs every test with CTest. Tests that need a GPU say they were skipped.
# Then the sanitizer build (ASan + UBSan: unit tests and the bad-input corpus) and short
# fuzzing runs of the file readers (TRICK_FUZZ_SECONDS per target).
set -euo pipefail
cd "$(dirname "$0")/.."
part() { echo "test.sh: $1 took $((SECONDS - t0)) s"; t0=$SECONDS; }
t0=$SECONDS
bash tools/install-deps.sh
part "install-deps"
jobs=$(nproc)
source tools/cmake_generator.sh
cmake_generator build
cmake "${generator[@]}" -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
part "build"
# The bad-input corpus (tests/bad_inputs.py, CTest label bad_inputs: one test per case) runs
# here in one process: a CTest process per case (525) each started Python and `trick
# --help` again, about a minute of this 2-core machine's CI. `ctest -L bad_inputs` still runs
# them one by one.
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 1500 -LE bad_inputs
part "ctest"
/usr/bin/python3 tests/bad_inputs.py all build/trick build/bad_inputs -j "$jobs"
part "bad inputs"
bash tools/sanitize.sh
part "sanitize.sh"
# 30 CPU-s per target (fuzz.sh runs all five at once: 75 s on two cores). Fuzzing here is a
# regression check from the committed corpus; longer runs by hand find new things:
# TRICK_FUZZ_SECONDS=150 bash tools/fuzz.sh
TRICK_FUZZ_SECONDS=${TRICK_FUZZ_SECONDS:-30} bash tools/fuzz.sh
part "fuzz.sh"
echo "test.sh: all passed in $SECONDS s"
