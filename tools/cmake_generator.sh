# Sourced by the build scripts (test.sh, sanitize.sh, demo.sh, make_gpu_kit.sh): `cmake_generator DIR` sets the
# array `generator` to (-G Ninja) for a build folder that does not exist yet, when ninja is
# installed (tools/install-deps.sh installs it); for an existing folder it stays empty, so CMake
# keeps the generator the folder was made with (it refuses a different one).
#
# Why Ninja: make builds target after target (trick's library, then the command, then the
# test objects, then the test binary), so on 2 cores the last sources of each target compiled
# alone: the sanitizer build ran at 126% CPU, with the test objects of its -O0 group (51 s) and
# the host replay of the CUDA kernels (63 s) each on one core. Ninja starts any source whose
# inputs are ready: 195% CPU, the same sanitizer build in 298 s instead of 472.
cmake_generator() {
  generator=()
  if [ ! -f "$1/CMakeCache.txt" ] && command -v ninja > /dev/null; then
    generator=(-G Ninja)
  fi
}
