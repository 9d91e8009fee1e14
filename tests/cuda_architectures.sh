#!/bin/sh
# tests/cuda_architectures.sh CMAKE: the CUDA architectures CMake builds for when none are given
# (tools/cuda_architectures.cmake): those of the GPUs nvidia-smi lists that nvcc can build for,
# else 90. Runs the function in CMake's script mode against stand-ins for nvidia-smi (printing
# what the real one prints for --query-gpu=compute_cap --format=csv,noheader, or failing as it
# does without a driver) and for nvcc --list-gpu-arch (CUDA 13's list).
cmake=$1
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/nvcc" <<'SH'
#!/bin/sh
[ "$1" = --list-gpu-arch ] || exit 2
printf 'compute_75\ncompute_80\ncompute_86\ncompute_87\ncompute_88\ncompute_89\ncompute_90\ncompute_100\ncompute_110\ncompute_103\ncompute_120\ncompute_121\n'
SH
chmod +x "$work/nvcc"
failed=0
# case: what nvidia-smi prints (a printf format; "FAIL" for exit status 9 with the driver's
# message, "" for no nvidia-smi at all); the architectures expected; a warning expected (0/1)
check() {
  listed=$1 want=$2 warn=$3
  smi=""
  if [ -n "$listed" ]; then
    smi="$work/nvidia-smi"
    if [ "$listed" = FAIL ]; then
      printf '#!/bin/sh\necho "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver."\nexit 9\n' > "$smi"
    else
      printf '#!/bin/sh\n[ "$1 $2" = "--query-gpu=compute_cap --format=csv,noheader" ] || exit 2\nprintf "%s"\n' "$listed" > "$smi"
    fi
    chmod +x "$smi"
  fi
  cat > "$work/run.cmake" <<CM
include("$here/tools/cuda_architectures.cmake")
trick_cuda_architectures(archs "$work/nvcc" "$smi")
message(STATUS "archs=[\${archs}]")
CM
  out=$("$cmake" -P "$work/run.cmake" 2>&1)
  got=$(printf '%s\n' "$out" | sed -n 's/^-- archs=\[\(.*\)\]$/\1/p')
  warned=0
  printf '%s\n' "$out" | grep -q "CMake Warning" && warned=1
  if [ "$got" = "$want" ] && [ "$warned" = "$warn" ]; then
    printf "ok: nvidia-smi printing '%s' -> [%s]\n" "$listed" "$got"
  else
    printf "FAILED: nvidia-smi printing '%s': expected [%s] (warning: %s), got [%s] (warning: %s):\n" "$listed" "$want" \
      "$warn" "$got" "$warned"
    printf '%s\n' "$out"
    failed=1
  fi
  rm -f "$work/nvidia-smi"
}
check "" "90" 0                         # no nvidia-smi: the H100/H200 default
check "FAIL" "90" 0                     # nvidia-smi without a driver
check "9.0\n" "90" 0                    # an H100 or H200
check "8.6\n8.6\n" "86" 0               # two RTX 3090s: one architecture
check "8.0\n9.0\n" "80;90" 0            # an A100 beside an H100
check "12.0\n" "120" 0                  # Blackwell (two-digit major)
check "7.0\n" "90" 1                    # a V100, which CUDA 13 cannot build for
check "7.0\n8.9\n" "89" 1               # one supported, one not
check "[N/A]\n" "90" 0                  # what it prints for a GPU it cannot query
exit $failed
