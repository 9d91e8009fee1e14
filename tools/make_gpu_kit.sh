#!/usr/bin/env bash
# Makes .gpukit/ (git-ignored through .git/info/exclude), what tools/gpu_check.sh needs on a
# lent GPU machine. That machine has CUDA (nvcc), CMake and PyTorch but, as far as anyone
# has seen, none of the Debian packages trick builds with, and it cannot download. Run here
# once before the device call:
#
#   bash tools/make_gpu_kit.sh              # 6-13 minutes on 2 cores (the CUDA build)
#   bash tools/make_gpu_kit.sh --deps-only  # seconds: only deps.tar.xz
#   device tool: run(command="bash tools/gpu_check.sh", carry=[".gpukit"], timeout_s=560)
#
#   .gpukit/deps.tar.xz  a prefix "deps/" with the headers, CMake configs, pkg-config files and
#                        shared libraries of OpenBLAS (OpenMP build), CLI11, nlohmann-json,
#                        doctest, stb, libjpeg-turbo, libpng, giflib, libwebp, zlib and cairo (with
#                        the libraries cairo loads), and pkgconf: gpu_check.sh configures and builds there with it
#   .gpukit/bin.tar.xz   trick and trick_tests built here (Release, sm_90, portable x86-64,
#                        no -march=native): gpu_check.sh runs them if the build there fails
#
# The C and C++ runtime (libc, libstdc++, libgomp) and the CUDA libraries come from the
# GPU machine: binaries built on Debian 12 run on newer glibc/libstdc++, not older.
set -euo pipefail
cd "$(dirname "$0")/.."
deps_only=0
build_dir=build-gpukit
for a in "$@"; do
  case "$a" in
    --deps-only) deps_only=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) build_dir=$a ;;
  esac
done

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpukit/' "$exclude" 2>/dev/null || echo '/.gpukit/' >> "$exclude"
mkdir -p .gpukit

arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
P=$tmp/deps
mkdir -p "$P"/{include,lib/pkgconfig,lib/cmake,share/cmake,bin}

# --- headers -------------------------------------------------------------------------------
cp -a /usr/include/CLI /usr/include/nlohmann /usr/include/doctest /usr/include/stb /usr/include/cairo /usr/include/webp \
  "$P/include/"
cp -L /usr/include/gif_lib.h /usr/include/zlib.h /usr/include/zconf.h "$P/include/"
cp -L /usr/include/jpeglib.h /usr/include/jerror.h /usr/include/jmorecfg.h "/usr/include/$arch/jconfig.h" \
  /usr/include/png.h /usr/include/pngconf.h /usr/include/pnglibconf.h "$P/include/"
blas_inc=/usr/include/$arch/openblas-openmp
mkdir -p "$P/include/openblas"
cp -L "$blas_inc"/*.h "$P/include/openblas/"

# --- CMake package configs (made relocatable) ---------------------------------------------
cp -a /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$P/share/cmake/"
cp -a /usr/lib/cmake/doctest "$P/lib/cmake/"
# doctest's targets file names /usr; make it the prefix three levels above itself.
sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
  "$P/lib/cmake/doctest/doctestTargets.cmake"
if grep -rq '"/usr' "$P/share/cmake" "$P/lib/cmake"; then
  echo "make_gpu_kit: a CMake config still names /usr:" >&2
  grep -rn '"/usr' "$P/share/cmake" "$P/lib/cmake" >&2
  exit 1
fi

# --- shared libraries ------------------------------------------------------------------------
core='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libgcc_s\.so|libstdc\+\+\.so|libgomp\.so)'
copy_lib() {  # copy_lib PATH [DEVNAME]: the library under its soname, plus libNAME.so for linking
  local real soname
  real=$(readlink -f "$1")
  soname=$(basename "$1")
  cp -L "$real" "$P/lib/$soname"
  [ -n "${2:-}" ] && ln -sf "$soname" "$P/lib/$2"
  # and what it loads, except the C/C++ runtime
  ldd "$real" | awk '$3 ~ /^\// {print $1, $3}' | while read -r name path; do
    if ! [[ "$name" =~ $core ]] && [ ! -e "$P/lib/$name" ]; then cp -L "$path" "$P/lib/$name"; fi
  done
}
copy_lib "/usr/lib/$arch/openblas-openmp/libopenblas.so.0" libopenblas.so
copy_lib "/lib/$arch/libgif.so.7" libgif.so
copy_lib "/lib/$arch/libwebp.so.7" libwebp.so
copy_lib "/lib/$arch/libwebpdemux.so.2" libwebpdemux.so
copy_lib "/lib/$arch/libz.so.1" libz.so
copy_lib "/lib/$arch/libjpeg.so.62" libjpeg.so
copy_lib "/lib/$arch/libpng16.so.16" libpng16.so
copy_lib "/lib/$arch/libcairo.so.2" libcairo.so
copy_lib "/lib/$arch/libpkgconf.so.3"
cp -L /usr/bin/pkgconf "$P/bin/pkgconf"
# pkg-config for CMake: the kit's pkgconf, libraries and .pc files only.
cat > "$P/bin/pkg-config" <<'EOF'
#!/bin/sh
d=$(cd "$(dirname "$0")/.." && pwd)
PKG_CONFIG_LIBDIR="$d/lib/pkgconfig" LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$d/bin/pkgconf" "$@"
EOF
chmod +x "$P/bin/pkg-config"

# --- pkg-config files, pointing at the prefix (gpu_check.sh replaces @KIT@) ----------------
cp -L /usr/lib/"$arch"/pkgconfig/*.pc /usr/share/pkgconfig/*.pc "$P/lib/pkgconfig/" 2>/dev/null || true
sed -i -e 's|^prefix=.*|prefix=@KIT@|' -e 's|^exec_prefix=.*|exec_prefix=${prefix}|' \
  -e 's|^libdir=.*|libdir=${prefix}/lib|' -e 's|^includedir=.*|includedir=${prefix}/include|' \
  -e "s|/usr/lib/$arch|\${prefix}/lib|g" -e 's|/usr/include|${prefix}/include|g' "$P"/lib/pkgconfig/*.pc
# CMake refuses an imported target whose include directories do not exist: make every one
# cairo's flags name (only cairo's own headers are needed to compile).
for d in $(pkg-config --cflags-only-I cairo); do
  d=${d#-I}
  d=${d#/usr/include}
  d=${d#/usr/lib/$arch}
  mkdir -p "$P/include/$d" "$P/lib/$d"
done

tar -cJf .gpukit/deps.tar.xz -C "$tmp" deps
echo "make_gpu_kit: .gpukit/deps.tar.xz $(du -h .gpukit/deps.tar.xz | cut -f1)"

[ "$deps_only" = 1 ] && exit 0

# --- prebuilt binaries ---------------------------------------------------------------------
# Every source file and its SHA-256 (what the globs and the build read, not scripts or docs;
# uncommitted changes included), taken before the build and checked after it (an edit during
# the build would be in the list but not in the binaries): gpu_check.sh uses these binaries
# instead of building when its tree matches.
mkdir -p "$tmp/bin"
git ls-files -co --exclude-standard -- CMakeLists.txt tensor kernels layers autograd models attack tools tests data |
  grep -vE '\.(py|sh|md)$' | while read -r f; do [ -f "$f" ] && echo "$f"; done | LC_ALL=C sort |
  xargs -d '\n' sha256sum >"$tmp/bin/SOURCES.sha256"
source tools/cmake_generator.sh
cmake_generator "$build_dir"
cmake "${generator[@]}" -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DTRICK_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DTRICK_CUDA=ON >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log" >&2; exit 1; }
grep -q 'trick: CUDA backend ON' "$tmp/configure.log" ||
  { echo "make_gpu_kit: this machine's build has no CUDA (nvcc not found?)" >&2; exit 1; }
cmake --build "$build_dir" -j"$(nproc)" --target trick trick_tests
sha256sum --quiet -c "$tmp/bin/SOURCES.sha256" ||
  { echo "make_gpu_kit: sources changed during the build; run it again" >&2; exit 1; }
cp "$build_dir/trick" "$build_dir/trick_tests" "$tmp/bin/"
echo "built from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' + uncommitted changes')" \
  >"$tmp/bin/BUILT_FROM"
strip "$tmp/bin/trick" "$tmp/bin/trick_tests"
tar -cJf .gpukit/bin.tar.xz -C "$tmp" bin
echo "make_gpu_kit: .gpukit/bin.tar.xz $(du -h .gpukit/bin.tar.xz | cut -f1) (built from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' + uncommitted changes'))"
du -sh .gpukit
