#!/bin/bash
# trick against PyTorch on the CPU, side by side: Inception v3 at 299x299, batch 1, forward
# and forward + input gradient (one attack step), the same thread count for both.
# Builds trick (Release), then runs ROUNDS rounds, each one `trick bench` and one
# tools/bench_pytorch.py (alternating which goes first), and prints every round and the
# medians over rounds with the ratio trick / PyTorch (<= 1: trick at least as fast), the
# machine (lscpu model) and the load before and after (uptime).
#
#   tools/bench_cpu.sh                      # 2 threads, 5 rounds of 10 repeats
#   THREADS=1 ROUNDS=3 REPEATS=20 tools/bench_cpu.sh
#   BUILD=build-perf NO_BUILD=1 tools/bench_cpu.sh
#
# Environment: THREADS (2), ROUNDS (5), REPEATS (10, per round and side; the median is
# taken), WARMUP (2), BUILD (build directory, default build), NO_BUILD=1 (use the binary as
# it is), TRICK_CPU_CONV=blas (trick's OpenBLAS engine instead of the implicit-GEMM one),
# OUT (a file to write the table to as well, written whole or not at all).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
threads=${THREADS:-2}
rounds=${ROUNDS:-5}
repeats=${REPEATS:-10}
warmup=${WARMUP:-2}
build=${BUILD:-build}
case "$build" in /*) ;; *) build="$here/$build" ;; esac
python=/usr/bin/python3  # Debian's, the one with torch

for v in "$threads" "$rounds" "$repeats" "$warmup"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "bench_cpu: THREADS, ROUNDS, REPEATS, WARMUP must be integers, got '$v'" >&2; exit 2; }
done
(( threads >= 1 && rounds >= 1 && repeats >= 1 )) || { echo "bench_cpu: THREADS, ROUNDS, REPEATS must be >= 1" >&2; exit 2; }
"$python" -c "import torch, torchvision" 2>/dev/null || { echo "bench_cpu: $python cannot import torch and torchvision" >&2; exit 2; }

if [[ -z "${NO_BUILD:-}" ]]; then
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build "$build" -j2 --target trick > /dev/null
fi
trick="$build/trick"
[[ -x "$trick" ]] || { echo "bench_cpu: no trick binary at $trick" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
load_before=$(uptime | sed 's/.*load average: //')
model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)

for ((r = 1; r <= rounds; ++r)); do
  run_trick() {
    "$trick" bench --threads "$threads" --repeats "$repeats" --warmup "$warmup" | grep '^{' >> "$work/trick.jsonl"
  }
  run_torch() {
    "$python" "$here/tools/bench_pytorch.py" --threads "$threads" --repeats "$repeats" --warmup "$warmup" --json \
      >> "$work/torch.jsonl"
  }
  if (( r % 2 )); then run_trick; run_torch; else run_torch; run_trick; fi
  echo "round $r of $rounds done" >&2
done
load_after=$(uptime | sed 's/.*load average: //')

"$python" - "$work/trick.jsonl" "$work/torch.jsonl" "$threads" "$repeats" "$model" "$load_before" "$load_after" \
  > "$work/table.txt" <<'EOF'
import json, statistics, sys
trick = [json.loads(l) for l in open(sys.argv[1])]
torch = [json.loads(l) for l in open(sys.argv[2])]
threads, repeats, model, before, after = sys.argv[3:8]
print(f"Inception v3, batch 1, {threads} threads, {len(trick)} interleaved rounds of {repeats} repeats (medians)")
print(f"machine: {model}; load average before: {before}; after: {after}")
print(f"trick conv engine: {trick[0].get('conv', '?')}; PyTorch {torch[0]['version']}")
print()
print("| round | trick fwd ms | PyTorch fwd ms | trick step ms | PyTorch step ms | trick step CPU ms | PyTorch step CPU ms |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
fmt = lambda v: f"{v:.1f}" if v is not None else "-"
for i, (a, b) in enumerate(zip(trick, torch), 1):
    print(f"| {i} | {fmt(a['forward_ms'])} | {fmt(b['forward_ms'])} | {fmt(a['step_ms'])} | {fmt(b['step_ms'])} | "
          f"{fmt(a.get('step_cpu_ms'))} | {fmt(b.get('step_cpu_ms'))} |")
def med(rows, k):
    vals = [r.get(k) for r in rows]
    return statistics.median(vals) if vals and None not in vals else None
print()
print("| median over rounds | trick ms | PyTorch ms | ratio trick / PyTorch |")
print("| --- | ---: | ---: | ---: |")
for label, key in [("forward", "forward_ms"), ("forward + input gradient", "step_ms"),
                   ("forward, CPU time (all threads)", "forward_cpu_ms"),
                   ("forward + input gradient, CPU time", "step_cpu_ms")]:
    t, p = med(trick, key), med(torch, key)
    if t is not None and p is not None:  # an older trick bench prints no CPU times
        print(f"| {label} | {t:.1f} | {p:.1f} | {t / p:.3f} |")
EOF
cat "$work/table.txt"
if [[ -n "${OUT:-}" ]]; then
  cp "$work/table.txt" "$OUT.tmp.$$" && mv "$OUT.tmp.$$" "$OUT"
fi
