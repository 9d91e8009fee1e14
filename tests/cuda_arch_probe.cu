// See tests/cuda_arch_probe.h. TRICK_PROBE_ARCH (80 or 90) names the copy.
#include "tests/cuda_arch_probe.h"

#define TRICK_PROBE_CAT2(a, b) a##b
#define TRICK_PROBE_CAT(a, b) TRICK_PROBE_CAT2(a, b)

namespace trick::test_cuda {
namespace {
__global__ void empty_kernel() {}
}  // namespace

const void* TRICK_PROBE_CAT(probe_kernel_sm, TRICK_PROBE_ARCH)() {
  return reinterpret_cast<const void*>(&empty_kernel);
}
}  // namespace trick::test_cuda
