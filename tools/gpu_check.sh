#!/usr/bin/env bash
# tools/gpu_check.sh: the prepared check for a lent H200, in one call of the device tool.
#
#   here, once:   bash tools/make_gpu_kit.sh      (makes .gpukit/: dependencies + prebuilt binaries)
#   device tool:  run(command="bash tools/gpu_check.sh", carry=[".gpukit"], timeout_s=560)
#
# Stages, each under `timeout` and inside one budget (GPU_CHECK_BUDGET, default 440 s, so
# the whole run stays well under 8 minutes); a failed stage prints FAILED with its last log
# lines and the script goes on, to the table at the end:
#   versions   nvidia-smi, nvcc, cmake, compiler, PyTorch
#   build      .gpukit's prebuilt binaries when they were built from exactly this tree's
#              sources (make_gpu_kit.sh records every file's SHA-256) and start here; else
#              configure + build Release for sm_90 with -j16, CUDA on, with .gpukit's
#              dependency prefix when the machine lacks the Debian dev packages, and if that
#              fails the prebuilt binaries anyway, said in the summary (GPU_CHECK_PREBUILT=1:
#              always the prebuilt ones; =0: build, even when they match; GPU_CHECK_BIN=DIR:
#              the trick and trick_tests already in DIR, no build)
#   cuda tests trick_tests -tc="cuda:*": every op against its CPU twin, CUDA graphs, the
#              attack step from a graph against the eager step
#   inception  trick_tests -tc="gpu inception*": Inception v3 logits and input gradient, GPU
#              against CPU, every conv backend
#   command    tests/emu_cli.py --gpu: trick attack/classify/grad/bench on the GPU against
#              the CPU, graphs against eager (what CI runs on the CUDA emulator); its Python,
#              with numpy and PIL: GPU_CHECK_PYTHON (default python3)
#   bench      trick bench (own, cublas, cudnn in fp32 and in TF32; own in bf16) and
#              tools/bench_gpu.py (PyTorch eager and CUDA graphs in fp32, TF32 and bf16
#              autocast), batch 1, 64, 256; then cuDNN at 256 with --cudnn-algo heuristic,
#              our kernels at batch 1 and 64 under other split-K policies (GPU_CHECK_SPLIT_K),
#              and cuBLAS in bf16 (last: the first cut when the budget runs out)
#   table      one table: ms, images/s, TFLOP/s, ratio against PyTorch eager
#   GPU_CHECK_QUICK=1: the tests and our own kernels' benchmark (fp32, TF32, bf16) only (no peer, no table)
#   GPU_CHECK_EMU=DIR: a rehearsal where there is no GPU: every stage on DIR's trick_emu and
#              trick_emu_tests (the CUDA emulator, kernels/cuda/emu/: our kernels on the CPU;
#              cuBLAS, cuDNN and PyTorch fail there), batch 1, one repeat (about 6 minutes)
#   GPU_CHECK_PROFILE=1: after the build, instead of tests and benchmark, Nsight Compute's
#              per-kernel times of one eager step (own kernels at batch 1 and 256, cuDNN at 256)
#   GPU_CHECK_LAYERS=1: after the build, instead of tests and benchmark, `trick bench --layers`
#              per run of GPU_CHECK_LAYER_RUNS (default: own fp32/tf32/bf16, cuDNN tf32/fp32, at
#              batch 256) and one table of every layer's time side by side (layers.md)
# Logs and the table go to $OUT (the device tool brings that folder back; at most 8 files):
#   versions.log build.log tests.log inception.log bench_trick.log bench_torch.log table.md summary.txt
# Without a GPU (a dry run) the GPU stages fail or skip quickly and the table still prints.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
EMU=${GPU_CHECK_EMU:-}
if [ -n "$EMU" ]; then  # the emulator's binaries under the names the stages run
  emu_dir=/tmp/trick-gpucheck-emu
  if [ ! -x "$EMU/trick_emu" ] || [ ! -x "$EMU/trick_emu_tests" ]; then
    echo "error: GPU_CHECK_EMU=$EMU: no trick_emu and trick_emu_tests there (cmake --build $EMU --target trick_emu trick_emu_tests)"
    exit 1
  fi
  mkdir -p "$emu_dir" && ln -sf "$(realpath "$EMU/trick_emu")" "$emu_dir/trick" &&
    ln -sf "$(realpath "$EMU/trick_emu_tests")" "$emu_dir/trick_tests" || exit 1
  GPU_CHECK_BIN=$emu_dir
fi
# Defaults: budget (s), batches, the split-K sweep's batches, repeats, warm-ups.
if [ -n "$EMU" ]; then
  set -- 900 1 1 1 0
else
  set -- 440 1,64,256 1,64 10 3
fi
BUDGET=${GPU_CHECK_BUDGET:-$1}
JOBS=${GPU_CHECK_JOBS:-16}
BATCHES=${GPU_CHECK_BATCHES:-$2}
SPLIT_BATCHES=${GPU_CHECK_SPLIT_BATCHES:-$3}
REPEATS=${GPU_CHECK_REPEATS:-$4}
WARMUP=${GPU_CHECK_WARMUP:-$5}
BUILD=${GPU_CHECK_BUILD_DIR:-build-gpu}
KIT=$ROOT/.gpukit
KIT_DIR=/tmp/trick-gpukit
DEPS=$KIT_DIR/deps
RESERVE=15  # seconds kept for the table
T0=$(date +%s)
SUMMARY=()
export PYTHONUNBUFFERED=1

elapsed() { echo $(($(date +%s) - T0)); }
finish() {  # summary.txt (every mode) and the summary on the console
  {
    echo "gpu_check.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), ${BUDGET}s budget, $(elapsed)s used"
    echo "binaries: ${BIN:-none}"
    printf '%s\n' "${SUMMARY[@]}"
  } >"$OUT/summary.txt"
  echo
  printf '%s\n' "${SUMMARY[@]}" | sed 's/^/  /'
}
say() { echo "[$(elapsed)s] $*"; }

# run_stage NAME LIMIT LOG CMD...: CMD under `timeout` (its limit, or what the budget has
# left), output appended to LOG; prints one line, and the log's tail on failure.
run_stage() {
  local name=$1 limit=$2 log=$3
  shift 3
  local avail=$((BUDGET - $(elapsed) - RESERVE))
  ((limit > avail)) && limit=$avail
  if ((limit < 10)); then
    say "$name: FAILED (no time left in the ${BUDGET}s budget)"
    SUMMARY+=("$name: FAILED (no time left)")
    return 124
  fi
  local s rc took why from
  s=$(date +%s)
  printf '\n== %s (limit %ss): %s\n' "$name" "$limit" "$*" >>"$log"  # a line of its own after a cut one
  from=$(($(stat -c %s "$log") + 1))
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - s))
  if ((rc == 0)); then
    say "$name: ok (${took}s)"
    SUMMARY+=("$name: ok (${took}s)")
  else
    why="exit $rc"
    ((rc == 124 || rc == 137)) && why="timed out after ${limit}s"
    say "$name: FAILED ($why, ${took}s); end of $(basename "$log"):"
    tail -c +"$from" "$log" | tail -n 6 | cut -c1-200 | sed 's/^/    /'
    SUMMARY+=("$name: FAILED ($why)")
  fi
  return $rc
}

# --- versions ----------------------------------------------------------------------------
{
  echo "== nvidia-smi"; nvidia-smi 2>&1
  echo "== nvcc"; nvcc --version 2>&1
  echo "== cmake"; cmake --version 2>&1 | head -1
  echo "== c++"; c++ --version 2>&1 | head -1
  echo "== python3 / torch"
  python3 -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1
  echo "== machine"; uname -srm; nproc; free -g 2>&1 | head -2; df -h . 2>&1 | tail -1
} >"$OUT/versions.log" 2>&1
say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'none (nvidia-smi failed)')"
say "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')"
say "torch: $(python3 -c "import torch; print(torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())" 2>/dev/null || echo 'not importable by python3')"

# --- where the libraries are --------------------------------------------------------------
if [ -f "$KIT/deps.tar.xz" ]; then
  rm -rf "$KIT_DIR" && mkdir -p "$KIT_DIR"
  if tar -xJf "$KIT/deps.tar.xz" -C "$KIT_DIR" && sed -i "s|@KIT@|$DEPS|g" "$DEPS"/lib/pkgconfig/*.pc; then
    say "kit: dependency prefix unpacked in $DEPS"
  else
    say "kit: FAILED to unpack .gpukit/deps.tar.xz"
    rm -rf "$DEPS"
  fi
else
  say "kit: no .gpukit/deps.tar.xz (run tools/make_gpu_kit.sh here and carry .gpukit): system packages only"
fi
# CUDA libraries: the toolkit's, and those of PyTorch's wheels (cuDNN may only be there).
cuda_dirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && cuda_dirs+=("$d")
done
wheel_roots=$(python3 -c "import nvidia, sys; print(' '.join(nvidia.__path__))" 2>/dev/null || true)
cudnn_lib="" cudnn_inc=""
for r in $wheel_roots; do
  while IFS= read -r f; do
    d=$(dirname "$f")
    [[ " ${cuda_dirs[*]} " == *" $d "* ]] || cuda_dirs+=("$d")
  done < <(find "$r" -name 'libcudnn.so*' -o -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libcudart.so*' 2>/dev/null)
done
for d in "${cuda_dirs[@]}"; do
  [ -z "$cudnn_lib" ] && for f in "$d/libcudnn.so" "$d/libcudnn.so.9"; do [ -e "$f" ] && cudnn_lib=$f && break; done
done
for d in /usr/include /usr/local/cuda/include $(for r in $wheel_roots; do find "$r" -name cudnn.h -printf '%h\n' 2>/dev/null; done); do
  [ -z "$cudnn_inc" ] && [ -f "$d/cudnn.h" ] && cudnn_inc=$d
done
CUDA_LD=$(IFS=:; echo "${cuda_dirs[*]}")
RUN_LD="$CUDA_LD"
[ -d "$DEPS/lib" ] && RUN_LD="$DEPS/lib:$RUN_LD"
{
  echo "== library dirs: $CUDA_LD"
  echo "== cudnn: ${cudnn_lib:-not found} (headers: ${cudnn_inc:-not found})"
} >>"$OUT/build.log"

# --- build -----------------------------------------------------------------------------------
BIN=""
configure() {  # configure [kit]
  local args=(-S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DTRICK_CUDA=ON)
  command -v ninja >/dev/null && [ ! -f "$BUILD/CMakeCache.txt" ] && args+=(-G Ninja)
  [ -n "$cudnn_lib" ] && args+=("-DCUDNN_LIBRARY=$cudnn_lib")
  [ -n "$cudnn_inc" ] && args+=("-DCUDNN_INCLUDE_DIR=$cudnn_inc")
  local rpath="$CUDA_LD"
  if [ "${1:-}" = kit ]; then
    args+=("-DCMAKE_PREFIX_PATH=$DEPS" "-DOPENBLAS_LIBRARY=$DEPS/lib/libopenblas.so"
      "-DOPENBLAS_INCLUDE_DIR=$DEPS/include/openblas" "-DPKG_CONFIG_EXECUTABLE=$DEPS/bin/pkg-config"
      "-DZLIB_ROOT=$DEPS")
    rpath="$DEPS/lib:$rpath"
  fi
  # The binaries find the kit's and the wheels' libraries without LD_LIBRARY_PATH (doctest
  # lists the tests by running trick_tests at build time), and the linker finds what the
  # kit's libraries load.
  args+=("-DCMAKE_BUILD_RPATH=${rpath//:/;}")
  # shellcheck disable=SC2206
  args+=(${GPU_CHECK_CMAKE_EXTRA:-})
  cmake "${args[@]}"
}
trk() { LD_LIBRARY_PATH="$RUN_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }
# Were .gpukit's binaries built from exactly these sources? make_gpu_kit.sh lists every
# source file with its SHA-256 (bin/SOURCES.sha256; scripts and docs left out: they are not
# built); all must match and no other may exist (CMake's globs would build it).
SRC_DIRS=(CMakeLists.txt tensor kernels layers autograd models attack tools tests data)
prebuilt_matches() {
  local list
  [ -f "$KIT/bin.tar.xz" ] || return 1
  list=$(tar -xJOf "$KIT/bin.tar.xz" bin/SOURCES.sha256 2>/dev/null) && [ -n "$list" ] || return 1
  sha256sum --quiet -c <<<"$list" >/dev/null 2>&1 || return 1
  diff <(awk '{print $2}' <<<"$list" | LC_ALL=C sort) <(find "${SRC_DIRS[@]}" -type f -not -path '*/__pycache__/*' -not -name '*.py' -not -name '*.sh' \
    -not -name '*.md' 2>/dev/null | LC_ALL=C sort) \
    >/dev/null
}
use_prebuilt() {  # unpacks .gpukit's binaries and sets BIN if they start here
  [ -f "$KIT/bin.tar.xz" ] && mkdir -p "$KIT_DIR" && tar -xJf "$KIT/bin.tar.xz" -C "$KIT_DIR" 2>>"$OUT/build.log" ||
    return 1
  if ! trk "$KIT_DIR/bin/trick" --version >>"$OUT/build.log" 2>&1; then
    say "build: .gpukit's prebuilt trick does not start here; missing libraries:"
    trk ldd "$KIT_DIR/bin/trick" 2>&1 | grep 'not found' | head -5 | sed 's/^/    /'
    return 1
  fi
  BIN=$KIT_DIR/bin
}
PREBUILT=${GPU_CHECK_PREBUILT:-auto}
if [ -n "${GPU_CHECK_BIN:-}" ]; then
  PREBUILT=1
  BIN=$(cd "$GPU_CHECK_BIN" && pwd) || BIN=""
  say "build: skipped: GPU_CHECK_BIN=$GPU_CHECK_BIN"
  SUMMARY+=("build: skipped, the binaries in GPU_CHECK_BIN=$GPU_CHECK_BIN")
  [ -n "$EMU" ] && SUMMARY+=("NOTE: a rehearsal on the CUDA emulator (GPU_CHECK_EMU=$EMU): the times are a CPU's, not a GPU's")
fi
if [ "$PREBUILT" = auto ]; then
  PREBUILT=0
  if prebuilt_matches && use_prebuilt; then
    PREBUILT=1
    say "build: skipped: .gpukit's binaries were built from exactly these sources ($(cat "$BIN/BUILT_FROM" 2>/dev/null)); GPU_CHECK_PREBUILT=0 builds anyway"
    SUMMARY+=("build: skipped, .gpukit's binaries are this tree's")
  fi
fi
if [ "$PREBUILT" != 1 ]; then
  ok=0
  if [ "${GPU_CHECK_FORCE_KIT:-0}" != 1 ] && run_stage "configure" 90 "$OUT/build.log" \
    bash -c "$(declare -f configure); $(declare -p ROOT BUILD cudnn_lib cudnn_inc CUDA_LD DEPS); configure"; then
    ok=1
  elif [ ! -d "$DEPS" ]; then
    say "configure: no .gpukit dependency prefix to fall back on"
    SUMMARY+=("configure: FAILED (and no .gpukit dependency prefix)")
  else
    rm -rf "$BUILD"
    run_stage "configure with the kit" 90 "$OUT/build.log" \
      bash -c "$(declare -f configure); $(declare -p ROOT BUILD cudnn_lib cudnn_inc CUDA_LD DEPS); configure kit" && ok=1
  fi
  # doctest lists the tests by running trick_tests at build time: the kit's libraries load
  # others of the kit (cairo -> pixman), which the binary's RUNPATH does not cover.
  if ((ok)) && run_stage "build (-j$JOBS)" 300 "$OUT/build.log" \
    env LD_LIBRARY_PATH="$RUN_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cmake --build "$BUILD" -j"$JOBS" --target trick trick_tests; then
    case $BUILD in /*) BIN=$BUILD ;; *) BIN=$ROOT/$BUILD ;; esac
  fi
fi
if [ -z "$BIN" ]; then
  if use_prebuilt; then
    from="$(cat "$BIN/BUILT_FROM" 2>/dev/null || echo 'commit not recorded')"
    say "build: using the prebuilt binaries from .gpukit/bin.tar.xz ($from; this tree: $(git -C "$ROOT" \
      rev-parse --short HEAD 2>/dev/null || echo unknown))"
    prebuilt_matches || SUMMARY+=("build: NOTE: everything below ran .gpukit's prebuilt binaries ($from), not this tree's sources")
  else
    say "build: FAILED and no usable prebuilt binaries (.gpukit/bin.tar.xz): the trick stages are skipped"
  fi
fi
if [ -n "$BIN" ] && ! trk "$BIN/trick" --version >>"$OUT/build.log" 2>&1; then
  say "build: FAILED: $BIN/trick does not start; missing libraries:"
  trk ldd "$BIN/trick" 2>&1 | grep 'not found' | head -5 | sed 's/^/    /'
  BIN=""
fi

# cuBLAS and cuDNN are loaded when first used (kernels/cuda/lazy_libs.h), not when trick
# starts: which files they come from here, or why they cannot be loaded.
if [ -n "$BIN" ]; then
  trk "$BIN/trick" info 2>&1 | grep -E '^(cuBLAS|cuDNN)' | while IFS= read -r line; do say "libraries: $line"; done
fi

export RUN_LD
# The GPU tests must not pass by skipping: with TRICK_REQUIRE_CUDA set, a test that finds no
# device fails. And the binaries must have the CUDA backend and see the GPU at all.
export TRICK_REQUIRE_CUDA=1
if [ -n "$BIN" ]; then
  info=$(trk "$BIN/trick" info 2>&1)
  echo "$info" >>"$OUT/build.log"
  if ! grep -q 'cuda backend: compiled' <<<"$info" || grep -q 'cuda devices: 0' <<<"$info"; then
    say "cuda: FAILED: the binaries have no CUDA backend or see no GPU (trick info):"
    echo "$info" | sed 's/^/    /'
    SUMMARY+=("cuda: FAILED (trick info: no CUDA backend or no device)")
  fi
fi

# --- profile (GPU_CHECK_PROFILE=1: instead of the tests and the benchmark) -------------------
# Nsight Compute's kernel durations (one pass, the card's clocks left alone) for one eager
# step of our own kernels at batch 1 and 256 and of cuDNN at batch 256, each written as CSV
# to $OUT and summarised by kernel name: where the time of the slowest configurations goes.
if [ "${GPU_CHECK_PROFILE:-0}" = 1 ]; then
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  profile() {  # profile NAME CONV BATCH
    local name=$1 conv=$2 batch=$3
    if [ -z "$BIN" ] || [ -z "$NCU" ]; then
      say "profile $name: FAILED (no trick binary or no ncu)"
      SUMMARY+=("profile $name: FAILED (no trick binary or no ncu)")
      return
    fi
    run_stage "profile $name" 150 "$OUT/profile.log" bash -c "LD_LIBRARY_PATH='$RUN_LD' '$NCU' --clock-control none \
      --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size --csv --page raw \
      '$BIN/trick' bench --device cuda:0 --model inception_v3 --batch $batch --repeats 1 --warmup 0 --conv $conv \
      --no-graph > '$OUT/ncu_$name.csv'"
    [ -s "$OUT/ncu_$name.csv" ] &&
      python3 tools/bench_gpu.py ncu-summary "$OUT/ncu_$name.csv" 2>&1 | tee -a "$OUT/profile.log" | head -25
  }
  for spec in ${GPU_CHECK_PROFILES:-own_b1:own:1 own_b256:own:256 cudnn_b256:cudnn:256}; do
    IFS=: read -r pname pconv pbatch <<<"$spec"
    profile "$pname" "$pconv" "$pbatch"
  done
  finish
  exit 0
fi

# --- layers (GPU_CHECK_LAYERS=1: instead of the tests and the benchmark) ------------------------
# `trick bench --layers` for each run of GPU_CHECK_LAYER_RUNS (conv:math:batch): every layer's
# forward and backward time from CUDA events around it in eager steps, merged by
# tools/bench_gpu.py layers into one table with a column per run (layers.md).
if [ "${GPU_CHECK_LAYERS:-0}" = 1 ]; then
  : >"$OUT/layers.jsonl"
  for spec in ${GPU_CHECK_LAYER_RUNS:-own:fp32:256 own:tf32:256 own:bf16:256 cudnn:tf32:256 cudnn:fp32:256}; do
    IFS=: read -r lconv lmath lbatch <<<"$spec"
    if [ -z "$BIN" ]; then
      say "layers $spec: FAILED (no trick binary)"
      continue
    fi
    lextra=()
    [ "$lmath" = tf32 ] && lextra+=(--tf32)
    [ "$lmath" = bf16 ] && lextra+=(--bf16)
    ljson=/tmp/trick-layers-$lconv-$lmath-$lbatch.jsonl
    run_stage "layers $spec" 90 "$OUT/layers.log" env LD_LIBRARY_PATH="$RUN_LD" "$BIN/trick" bench --device cuda:0 \
      --model inception_v3 --batch "$lbatch" --repeats 5 --warmup 2 --conv "$lconv" "${lextra[@]}" --layers \
      --layers-json "$ljson" && cat "$ljson" >>"$OUT/layers.jsonl"
  done
  python3 tools/bench_gpu.py layers "$OUT/layers.jsonl" --out "$OUT/layers.md" | tail -30
  finish
  exit 0
fi

# --- tests -----------------------------------------------------------------------------------
doctest_summary() {  # the test counts and the first failures of a doctest log
  grep -E '^\[doctest\] (test cases|assertions)' "$1" | tail -2 | sed 's/^/    /'
  grep -E 'ERROR:|FATAL' "$1" | head -4 | cut -c1-200 | sed 's/^/    /'
  grep -E 'skipped: no CUDA' "$1" | head -1 | cut -c1-160 | sed 's/^/    /'
}
if [ -n "$BIN" ]; then
  # The host-only cases (index math, schedules replayed on the host) run in CI: not here.
  run_stage "cuda tests" 200 "$OUT/tests.log" env LD_LIBRARY_PATH="$RUN_LD" "$BIN/trick_tests" -tc="cuda:*" \
    -tce="*(host)*,*replayed on the host*"
  doctest_summary "$OUT/tests.log"
  run_stage "inception gpu vs cpu" 120 "$OUT/inception.log" env LD_LIBRARY_PATH="$RUN_LD" \
    "$BIN/trick_tests" -tc="gpu inception*"
  # each backend against the CPU in fp32; our tensor-core modes also against the CPU's emulation of them
  grep -oE "(backend [a-z]+/[a-z0-9]+|own/[a-z0-9]+ against the CPU's emulation): .*" "$OUT/inception.log" | head -10 |
    cut -c1-160 | sed 's/^/    /'
  doctest_summary "$OUT/inception.log"
  # The command itself on the GPU against its CPU backend, as CI runs it on the emulator: the
  # demo attack from graphs and eagerly (equal), TF32/bf16, classify, grad, bench --both.
  run_stage "command gpu vs cpu" 60 "$OUT/tests.log" env LD_LIBRARY_PATH="$RUN_LD" \
    "${GPU_CHECK_PYTHON:-python3}" tests/emu_cli.py "$BIN/trick" --gpu ||
    { echo "    the failed checks:"; grep -E '^FAIL' "$OUT/tests.log" | head -4 | cut -c1-200 | sed 's/^/    /'; }
fi

# --- benchmark -------------------------------------------------------------------------------
# Order: our main configuration, then the peer (without it there are no ratios), then the
# other backends; when the budget runs out, the last ones are the ones cut.
: >"$OUT/bench_trick.log"
: >"$OUT/bench_torch.log"
bench_fail() {  # a table row saying a configuration failed
  # after a newline: a stage killed mid-line must not swallow the row
  printf '\n{"engine": "trick", "conv": "%s", "math": "%s", "failed": "%s"}\n' "$1" "$2" "$3" >>"$OUT/bench_trick.log"
}
bench_trick() {  # bench_trick CONV MATH LIMIT
  local conv=$1 math=$2 limit=$3 extra=()
  if [ -z "$BIN" ]; then
    bench_fail "$conv" "$math" "no trick binary"
    return
  fi
  [ "$math" = tf32 ] && extra+=(--tf32)
  [ "$math" = bf16 ] && extra+=(--bf16)
  [ "$conv" = own ] && extra+=(--both)  # eager too, and graph == eager bit for bit
  run_stage "bench trick $conv $math" "$limit" "$OUT/bench_trick.log" env LD_LIBRARY_PATH="$RUN_LD" \
    "$BIN/trick" bench --device cuda:0 --model inception_v3 --batch "$BATCHES" --repeats "$REPEATS" \
    --warmup "$WARMUP" --conv "$conv" "${extra[@]}" ||
    bench_fail "$conv" "$math" "failed or timed out (rows above may be complete; see bench_trick.log)"
}
bench_trick own fp32 100
bench_trick own tf32 60
bench_trick own bf16 60
if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then  # our kernels only: a check after a change to them
  finish
  grep -E '^model|^ +[0-9]+ +(eager|graph)' "$OUT/bench_trick.log" | sed 's/^/  /'
  exit 0
fi
run_stage "bench pytorch" 200 "$OUT/bench_torch.log" python3 tools/bench_gpu.py time --batch "$BATCHES" \
  --repeats "$REPEATS" --warmup "$WARMUP" ||
  printf '\n{"engine": "pytorch", "failed": "bench_gpu.py failed or timed out (see bench_torch.log)"}\n' >>"$OUT/bench_torch.log"
bench_trick cudnn fp32 60
bench_trick cublas fp32 60
bench_trick cudnn tf32 60
bench_trick cublas tf32 60
# cuDNN's heuristic choice (what trick used before measuring), where it went wrong.
[ -n "$BIN" ] && { run_stage "bench trick cudnn fp32 heuristic" 45 "$OUT/bench_trick.log" env LD_LIBRARY_PATH="$RUN_LD" \
  "$BIN/trick" bench --device cuda:0 --model inception_v3 --batch 256 --repeats 5 --warmup 1 --conv cudnn \
  --cudnn-algo heuristic || bench_fail cudnn "fp32 heuristic" "failed or timed out"; }
# Our kernels' split-K policy (kernels/backend.h), swept where it acts: small batches.
for policy in ${GPU_CHECK_SPLIT_K:-off 4,64 16,64 8,32 8,128}; do
  [ -z "$BIN" ] && break
  run_stage "bench trick own split-k $policy" 30 "$OUT/bench_trick.log" env LD_LIBRARY_PATH="$RUN_LD" \
    "$BIN/trick" bench --device cuda:0 --model inception_v3 --batch "$SPLIT_BATCHES" --repeats "$REPEATS" \
    --warmup "$WARMUP" --conv own --split-k "$policy" || bench_fail own "fp32 split-k $policy" "failed or timed out"
done
bench_trick cublas bf16 45

# --- table -----------------------------------------------------------------------------------
echo
python3 tools/bench_gpu.py table "$OUT/bench_trick.log" "$OUT/bench_torch.log" --out "$OUT/table.md" ||
  echo "table: FAILED"
finish
say "done; logs and table.md in $OUT"
