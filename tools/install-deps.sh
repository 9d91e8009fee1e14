#!/usr/bin/env bash
# Installs the Debian packages trick builds and tests with (skips what is already there).
#   ninja-build       builds on every core (make left one idle at the end of each target)
#   libopenblas-openmp-dev  CPU GEMM (the OpenMP build: one thread pool with our loops)
#   doctest-dev       unit tests
#   libjpeg62-turbo-dev, libpng-dev   JPEG and PNG decoding (fuzzed upstream; PIL's libjpeg too)
#   libstb-dev        BMP decode, PNG encode               libcli11-dev        command line
#   nlohmann-json3-dev JSON (safetensors headers, traces)
#   libcairo2-dev, fonts-dejavu-core, libgif-dev   the four-panel animation (giflib also
#                     decodes GIF input)
#   zlib1g-dev        gzip'd Fashion-MNIST IDX files    dataset-fashion-mnist  its data
#   python3-torch, python3-torchvision, python3-skimage, python3-pil, python3-numpy
#                     the PyTorch/PIL parity tests (Debian's /usr/bin/python3) and real photos
#   clang, libclang-rt-dev   the libFuzzer targets (tools/fuzz.sh): clang's -fsanitize=fuzzer
#                     needs its compiler-rt libraries, which clang itself only recommends
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libopenblas-openmp-dev doctest-dev libjpeg62-turbo-dev libpng-dev libstb-dev libcli11-dev
  nlohmann-json3-dev libcairo2-dev fonts-dejavu-core libgif-dev zlib1g-dev dataset-fashion-mnist
  python3-torch python3-torchvision python3-skimage python3-pil python3-numpy clang libclang-rt-dev)
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
