#!/bin/bash
# trick against PyTorch on the CPU, side by side: Inception v3 at 299x299, batch 1 (BATCH), forward
# and forward + input gradient (one attack step), the same thread count for both.
# Builds trick (Release), then runs ROUNDS rounds, each one `trick bench` and one
# tools/bench_pytorch.py (alternating which goes first), and prints every round and the
# medians over rounds with the ratio trick / PyTorch (<= 1: trick at least as fast), the
# machine (lscpu model) and the load before and after (uptime).
#
#   tools/bench_cpu.sh                      # 2 threads, 5 rounds of 10 repeats
#   THREADS=1 ROUNDS=3 REPEATS=20 tools/bench_cpu.sh
#   BATCH=8 ROUNDS=3 REPEATS=4 tools/bench_cpu.sh   # images per step (an attack on several photos)
#   BUILD=build-perf NO_BUILD=1 tools/bench_cpu.sh
#   PROFILE=1 tools/bench_cpu.sh            # where one step's time goes (perf, 1 thread)
#
# Environment: THREADS (2), BATCH (1), ROUNDS (5), REPEATS (10, per round and side; the
# median is taken), WARMUP (2), BUILD (build directory, default build), NO_BUILD=1 (use the binary as
# it is), TRICK_CPU_CONV=packed|blas (trick's implicit-GEMM engine without Winograd, or its
# OpenBLAS engine, instead of the default winograd),
# TORCH_PASSIVE=1 (PyTorch's OpenMP threads sleep instead of spinning while they wait:
# OMP_WAIT_POLICY=PASSIVE, kinder to PyTorch on a loaded machine), OUT (a file to write the
# table to as well, written whole or not at all).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
threads=${THREADS:-2}
batch=${BATCH:-1}
rounds=${ROUNDS:-5}
repeats=${REPEATS:-10}
warmup=${WARMUP:-2}
build=${BUILD:-build}
case "$build" in /*) ;; *) build="$here/$build" ;; esac
python=/usr/bin/python3  # Debian's, the one with torch

for v in "$threads" "$batch" "$rounds" "$repeats" "$warmup"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "bench_cpu: THREADS, BATCH, ROUNDS, REPEATS, WARMUP must be integers, got '$v'" >&2; exit 2; }
done
(( threads >= 1 && batch >= 1 && rounds >= 1 && repeats >= 1 )) || { echo "bench_cpu: THREADS, BATCH, ROUNDS, REPEATS must be >= 1" >&2; exit 2; }
"$python" -c "import torch, torchvision" 2>/dev/null || { echo "bench_cpu: $python cannot import torch and torchvision" >&2; exit 2; }

if [[ -z "${NO_BUILD:-}" ]]; then
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build "$build" -j2 --target trick > /dev/null
fi
trick="$build/trick"
[[ -x "$trick" ]] || { echo "bench_cpu: no trick binary at $trick" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -n "${PROFILE:-}" ]]; then
  # One thread, so every sample's call stack reaches the layer that asked for the work; DWARF
  # unwinding, as the libraries have no frame pointers. Samples of the attack step only.
  command -v perf > /dev/null || { echo "bench_cpu: PROFILE needs perf (apt-get install linux-perf)" >&2; exit 2; }
  perf record -q -F 500 --call-graph dwarf,16384 -o "$work/perf.data" \
    "$trick" bench --threads 1 --repeats 8 --warmup 1 > /dev/null 2>&1
  cat > "$work/breakdown.py" <<'PY'
import collections, re, sys
def kind(s):
    top = s.split(" ")[0]
    if "page_fault" in s or "clear_page" in s: return "page faults (first touch of new memory)"
    if "kernel_6x16" in top: return "conv: sgemm micro-kernel"
    if "pack_b" in top: return "conv: packing weights"
    if "im2col" in s or "dgrad_by_columns" in s: return "conv: first layer (3 channels) im2col / col2im"
    if "relu_backward" in s: return "ReLU backward (its own pass)"
    if "conv2d" in s: return "conv: tile set-up, driver"
    if "max_pool2d" in s: return "max-pool"
    if "avg_pool2d" in s or "global_avg" in s: return "average pools"
    if "gemm" in s or "linear" in s: return "linear layer"
    if "cross_entropy" in s or "softmax" in s: return "loss"
    if "unary" in s or "affine" in s: return "input affine (2x - 1)"
    if re.search(r"malloc|free|Storage|HostCache", s): return "allocation"
    return "other (autograd, threads, copies)"
count, total, stack = collections.Counter(), 0, []
for line in list(sys.stdin) + [""]:
    if line.strip() and line[0] in " \t":
        parts = line.split(None, 1)  # address, then the symbol (which may hold spaces) and the file
        stack.append(parts[1] if len(parts) > 1 else parts[0])
        continue
    s = " ".join(stack)
    if stack and "Work::step" in s:  # the timed attack step, not set-up or the forward-only timing
        phase = "backward" if "Var::backward" in s else "forward"
        count[(kind(s), phase)] += 1
        total += 1
    stack = []
if not total:
    sys.exit("bench_cpu: no samples of the step (perf without DWARF unwinding?)")
kinds = collections.Counter()
for (k, _), v in count.items():
    kinds[k] += v
print(f"Where one attack step goes (trick bench, 1 thread, perf samples: {total})")
print()
print("| kind of work | share of the step | in forward | in backward |")
print("| --- | ---: | ---: | ---: |")
for k, v in kinds.most_common():
    f, b = count[(k, "forward")], count[(k, "backward")]
    print(f"| {k} | {100 * v / total:.1f}% | {100 * f / total:.1f}% | {100 * b / total:.1f}% |")
PY
  perf script -i "$work/perf.data" 2> /dev/null | "$python" "$work/breakdown.py"
  exit 0
fi
load_before=$(uptime | sed 's/.*load average: //')
model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)

for ((r = 1; r <= rounds; ++r)); do
  run_trick() {
    "$trick" bench --threads "$threads" --batch "$batch" --repeats "$repeats" --warmup "$warmup" | grep '^{' >> "$work/trick.jsonl"
  }
  run_torch() {
    env ${TORCH_PASSIVE:+OMP_WAIT_POLICY=PASSIVE} "$python" "$here/tools/bench_pytorch.py" --channels-last --threads "$threads" --batch "$batch" --repeats "$repeats" --warmup "$warmup" --json \
      >> "$work/torch.jsonl"
  }
  if (( r % 2 )); then run_trick; run_torch; else run_torch; run_trick; fi
  echo "round $r of $rounds done" >&2
done
load_after=$(uptime | sed 's/.*load average: //')

"$python" - "$work/trick.jsonl" "$work/torch.jsonl" "$threads" "$repeats" "$model" "$load_before" "$load_after" \
  "${TORCH_PASSIVE:+ (OMP_WAIT_POLICY=PASSIVE)}" "$batch" > "$work/table.txt" <<'EOF'
import json, statistics, sys
trick = [json.loads(l) for l in open(sys.argv[1])]
torch = [json.loads(l) for l in open(sys.argv[2])]
threads, repeats, model, before, after, torch_env, batch = sys.argv[3:10]
print(f"Inception v3, batch {batch}, {threads} threads, {len(trick)} interleaved rounds of {repeats} repeats (medians)")
print(f"machine: {model}; load average before: {before}; after: {after}")
if batch != "1":
    print(f"ms: one forward or step of all {batch} images")
print(f"trick conv engine: {trick[0].get('conv', '?')}; PyTorch {torch[0]['version']}{torch_env}")
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
