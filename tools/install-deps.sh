#!/usr/bin/env bash
# Installs the Debian packages trick needs (skips what is already there).
#   bash tools/install-deps.sh build   what building and running trick needs (tools/demo.sh)
#   bash tools/install-deps.sh         that and what the tests need (tools/test.sh)
#
# build:
#   ninja-build       builds on every core (make left one idle at the end of each target)
#   libopenblas-openmp-dev  CPU GEMM (the OpenMP build: one thread pool with our loops)
#   doctest-dev       unit tests (CMake builds them by default; a header, 0.1 MB)
#   libjpeg62-turbo-dev, libpng-dev   JPEG and PNG decoding (fuzzed upstream; PIL's libjpeg too)
#   libstb-dev        BMP decode                           libcli11-dev        command line
#   nlohmann-json3-dev JSON (safetensors headers, traces)
#   libcairo2-dev, fonts-dejavu-core, libgif-dev   the four-panel animation (giflib also
#                     decodes GIF input)
#   zlib1g-dev        gzip'd Fashion-MNIST IDX files
#   libwebp-dev       WebP decoding (libwebp and its demuxer: what PIL decodes WebP with)
# tests, in addition:
#   dataset-fashion-mnist  the data `trick train` and `trick eval` read (30 MB)
#   python3-torch, python3-torchvision, python3-skimage, python3-pil, python3-numpy
#                     the PyTorch/PIL parity tests (Debian's /usr/bin/python3) and real photos
#   clang, libclang-rt-dev   the libFuzzer targets (tools/fuzz.sh): clang's -fsanitize=fuzzer
#                     needs its compiler-rt libraries, which clang itself only recommends
# On a fresh Debian 12 (debootstrap --variant=minbase) the build set is about 180 MB of
# downloads and the whole set about 540 MB (measured by tools/fresh_debian.sh; README).
set -euo pipefail
build=(build-essential cmake ninja-build pkg-config libopenblas-openmp-dev doctest-dev libjpeg62-turbo-dev libpng-dev
  libstb-dev libcli11-dev nlohmann-json3-dev libcairo2-dev fonts-dejavu-core libgif-dev zlib1g-dev
  libwebp-dev)
tests=(dataset-fashion-mnist python3-torch python3-torchvision python3-skimage python3-pil python3-numpy clang
  libclang-rt-dev)
case "${1:-all}" in
  build) packages=("${build[@]}") ;;
  all) packages=("${build[@]}" "${tests[@]}") ;;
  *)
    echo "usage: bash tools/install-deps.sh [build|all]" >&2
    exit 2
    ;;
esac
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
