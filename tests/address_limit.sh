#!/bin/sh
# tests/address_limit.sh TRICK: out of memory under an address-space limit (ulimit -v) is one
# "error: ... out of memory ..." line and exit status 1, never a hang or a crash. `trick bench`
# on Inception v3 at batch 8 (about 0.9 GB) runs under limits from 450 to 800 MB, each
# within 60 s. OpenBLAS 0.3.21 retried its buffer's map forever once the limit was full
# (kernels/cpu/gemm.cpp): this hung at 100% CPU until the limit was checked first.
# OPENBLAS_NUM_THREADS=1 (read before main): OpenBLAS maps 128 MiB for each of its threads at
# start, so the room left under a limit would otherwise depend on the core count.
trick=$1
command -v prlimit > /dev/null || { echo "skipped: prlimit (util-linux) is not installed"; exit 77; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
failed=0
out_of_memory=0
# The last run asks for 8 threads: raising OpenBLAS's thread count maps a buffer for each new
# thread (7 x 128 MiB, more than the room left), and that retried forever too.
for run in 450:1 550:1 700:1 800:1 700:8; do
  mb=${run%:*} threads=${run#*:}
  err=$(timeout 60 prlimit --as=$((mb * 1024 * 1024)) "$trick" bench --batch 8 --repeats 1 --warmup 0 \
    --device cpu --threads "$threads" 2>&1 > /dev/null)
  rc=$?
  lines=$(printf '%s\n' "$err" | grep -c '^error:')
  echo "limit $mb MB, $threads threads: exit $rc: $err"
  if [ $rc = 124 ]; then
    echo "FAILED: still running after 60 s (a hang) under a $mb MB limit"
    failed=1
  elif [ $rc = 0 ]; then
    :  # fitted (not expected at these sizes, and not a failure)
  elif [ $rc != 1 ] || [ "$lines" != 1 ] || ! printf '%s\n' "$err" | grep -q '^error: .*out of \(host \)\?memory'; then
    echo "FAILED: under a $mb MB limit, expected exit 1 and one 'error: ... out of memory' line"
    failed=1
  else
    out_of_memory=$((out_of_memory + 1))
  fi
done
[ $out_of_memory -gt 0 ] || { echo "FAILED: no run reached the out-of-memory path"; failed=1; }
[ $failed = 0 ] && echo "ok: every run under a limit ended, $out_of_memory of them with an out-of-memory line"
exit $failed
