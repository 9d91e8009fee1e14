#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer: a separate CPU-only build
# (-DTRICK_SANITIZE=ON -DTRICK_CUDA=OFF) that runs the doctest binary, then the bad-input
# corpus (tests/bad_inputs.py) against the sanitized `trick`. Any sanitizer report fails.
#
#   TRICK_SANITIZE_BUILD        build folder (default build-asan)
#   TRICK_SANITIZE_BAD_INPUTS   0: skip the bad-input corpus; all: every case (525, 90 s here);
#                               default: every command's control and option cases, and each bad
#                               input file through one command (279 cases, 55 s; the plain run
#                               in tools/test.sh runs them all)
#   TRICK_SANITIZE_TESTS        a doctest filter argument for trick_tests, given whole (e.g.
#                               "-tc=cuda: conv2d*"); default: every test
#   TRICK_SANITIZE_EXCLUDE      test cases left out (doctest -tce=...). Default: the two
#                               whole-dataset Fashion-MNIST runs (training 200 steps, eval of
#                               10,000 images): 146 of the 225 s under ASan here, and their code
#                               (conv, batch norm, SGD, the IDX reader) is run sanitized by the
#                               smaller tests; and the bit-for-bit resumed training and the
#                               resize gradient check (18 and 8 s of 61); and trick bench-conv
#                               on two layers (24 s: its sums in double, in the command built at
#                               -O0 here), which the bad-input corpus's bench-conv control runs
#                               sanitized on one layer. CTest runs all five unsanitized. ""
#                               runs everything.
#   TRICK_SANITIZE_DEBUG        1: compile with -g (file:line in reports; slower build)
#   TRICK_SANITIZE_OPT          optimisation flag (default -O1)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TRICK_SANITIZE_BUILD:-build-asan}
jobs=$(nproc)
start=$(date +%s)
source tools/cmake_generator.sh
cmake_generator "$build"
mkdir -p "$build"
# -O1 without debug info: GCC with ASan + UBSan at -O2 -g takes twice as long to compile (86 s
# against 27 s for tools/cmd_attack.cpp here), which kept CI over 20 minutes. Reports still name
# the functions; TRICK_SANITIZE_DEBUG=1 adds -g for file:line in the stacks.
cmake "${generator[@]}" -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="${TRICK_SANITIZE_OPT:--O1} ${TRICK_SANITIZE_DEBUG:+-g }-DNDEBUG" \
  -DTRICK_SANITIZE=ON -DTRICK_CUDA=OFF > "$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j"$jobs" --target trick trick_tests
built=$(date +%s)
echo "sanitize.sh: built in $((built - start)) s"

# Leaks: cairo and fontconfig keep process-lifetime caches (fonts, patterns) that they never
# free; LeakSanitizer reports them at exit from the rendering tests. Suppressed by those
# libraries only, so a leak in trick's own code (or one through another library) still fails.
mkdir -p "$build"
cat > "$build/lsan.supp" << 'EOF'
leak:libfontconfig.so
leak:libcairo.so
leak:libpixman-1.so
leak:libfreetype.so
EOF
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0:strict_string_checks=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$(cd "$build" && pwd)/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

status=0
echo "sanitize.sh: trick_tests under ASan + UBSan"
# From the repository root, as CTest runs them (tests read files relative to it).
# Left to the plain build's CTest run, where they run in full: minutes of arithmetic on code
# the other tests already run under the sanitizers (training and evaluation on the real data;
# the bit-for-bit resumed training, whose checkpoint writing and reading "trick train --resume
# refuses ..." covers here; the double-precision gradient check of every resize case; bench-conv's
# sums in double, which the bad-input corpus's bench-conv control runs sanitized).
exclude=${TRICK_SANITIZE_EXCLUDE-"fashion: training on a slice*,fashion: trick eval on the embedded model*,fashion: a resumed run equals*,resize: backward matches central differences,profile: trick bench-conv times the chosen layers*"}
# In $jobs processes at a time: one runs its cases one after another, on one core (108 s at
# 103% CPU here). The cases the filters select are listed, dealt in turn to groups (each case by
# its own name as a filter, a comma, where doctest splits filters, matched by '?'), and the
# groups run $jobs at a time, the next starting when one ends; every listed case must then have
# run in one of them. Two fixed halves left a core idle for a third of the run (92 s for 137
# CPU-s: one 27 s case, the rest under 15 s). Heaviest first when the plain build's CTest times
# are there (tools/test.sh runs CTest first; $TRICK_SANITIZE_COSTS names another file).
filters=(${TRICK_SANITIZE_TESTS:+"$TRICK_SANITIZE_TESTS"} ${exclude:+"-tce=$exclude"})
mapfile -t cases < <("$build/trick_tests" --list-test-cases "${filters[@]}" 2>/dev/null |
  grep -v -e '^\[doctest\]' -e '^=====')
costs=${TRICK_SANITIZE_COSTS:-build/Testing/Temporary/CTestCostData.txt}
if [ -f "$costs" ] && [ "${#cases[@]}" -gt 0 ]; then
  # CTestCostData.txt: "<test name> <runs> <seconds>" a line, until a line "---".
  mapfile -t cases < <(printf '%s\n' "${cases[@]}" | /usr/bin/python3 -c '
import sys
cost = {}
for line in open(sys.argv[1], errors="replace"):
    if line.strip() == "---":
        break
    w = line.split()
    try:
        cost[" ".join(w[:-2])] = float(w[-1])
    except (ValueError, IndexError):
        pass
names = sys.stdin.read().splitlines()
print("\n".join(sorted(names, key=lambda n: -cost.get(" ".join(n.split()), 0.0))))' "$costs")
fi
groups=$((jobs * 6))
[ "${#cases[@]}" -ge "$groups" ] || groups=${#cases[@]}
[ "$groups" -ge 1 ] || groups=1
group_filter=()
for i in "${!cases[@]}"; do
  k=$((i % groups))
  group_filter[k]+="${group_filter[k]:+,}${cases[i]//,/?}"
done
rm -f "$build"/trick_tests.*.log "$build"/trick_tests.*.status
run_group() {  # group -> its log and exit status in $build/trick_tests.<k>.{log,status}
  local k=$1 rc=0
  if [ "${#cases[@]}" -le 1 ]; then
    "$build/trick_tests" "${filters[@]}" > "$build/trick_tests.$k.log" 2>&1 || rc=$?
  else
    "$build/trick_tests" "-tc=${group_filter[k]}" ${exclude:+"-tce=$exclude"} > "$build/trick_tests.$k.log" 2>&1 || rc=$?
  fi
  echo "$rc" > "$build/trick_tests.$k.status"
}
for ((k = 0; k < groups; k++)); do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_group "$k" &
done
wait
ran=0
for ((k = 0; k < groups; k++)); do
  [ "$(cat "$build/trick_tests.$k.status" 2> /dev/null)" = "0" ] || {
    status=1
    echo "sanitize.sh: trick_tests failed ($build/trick_tests.$k.log, its end:)" >&2
    tail -40 "$build/trick_tests.$k.log" >&2
  }
  ran=$((ran + $(sed -n 's/^\[doctest\] test cases: *\([0-9]*\) .*/\1/p' "$build/trick_tests.$k.log" | tail -1)))
done
echo "sanitize.sh: $ran test cases in $groups processes, $jobs at a time"
cat "$build"/trick_tests.*.log > "$build/trick_tests.log"
if [ "$ran" != "${#cases[@]}" ]; then
  echo "sanitize.sh: ${#cases[@]} test cases listed, $ran ran" >&2
  status=1
fi
if grep -E -q "ERROR: (Address|Leak)Sanitizer|runtime error:" "$build/trick_tests.log"; then
  echo "sanitize.sh: sanitizer report in trick_tests:" >&2
  grep -E -A30 "ERROR: (Address|Leak)Sanitizer|runtime error:" "$build/trick_tests.log" | head -80 >&2
  status=1
fi
tests_done=$(date +%s)
echo "sanitize.sh: trick_tests took $((tests_done - built)) s"

if [ "${TRICK_SANITIZE_BAD_INPUTS:-1}" != "0" ]; then
  echo "sanitize.sh: the bad-input corpus against the sanitized trick"
  distinct=--distinct
  [ "${TRICK_SANITIZE_BAD_INPUTS:-1}" != "all" ] || distinct=
  /usr/bin/python3 tests/bad_inputs.py all "$build/trick" "$build/bad_inputs" -j "$jobs" $distinct || status=1
  echo "sanitize.sh: bad inputs took $(($(date +%s) - tests_done)) s"
fi
echo "sanitize.sh: done in $(($(date +%s) - start)) s"
exit $status
