// Division by a run-time constant with a multiply and a shift (Granlund and Montgomery;
// CUTLASS's FastDivmod), for splitting flat indices into (row, column) in memory-bound
// kernels, where a hardware-less integer division would cost more than the load.
// Plain C++ with __host__ __device__ under nvcc, so tests check it on the host.
#pragma once
#include <cstdint>

#include "kernels/host_device.h"

namespace trick {
namespace cuda {

// Exact for 0 <= n < 2^31 and 1 <= d < 2^31.
struct FastDiv {
  uint32_t d = 1, mul = 0, shift = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    // With l = ceil(log2(d)): mul = ceil(2^(31 + l) / d) < 2^32 and shift = l - 1, so
    // n / d = (n * mul) >> (32 + shift) for every n < 2^31 (CUTLASS's FastDivmod).
    uint32_t l = 0;
    while ((uint64_t{1} << l) < d) ++l;
    if (d > 1) {
      mul = static_cast<uint32_t>(((uint64_t{1} << (31 + l)) + d - 1) / d);
      shift = l - 1;
    }
  }
  TRICK_HD uint32_t div(uint32_t n) const {
    if (d == 1) return n;
#if defined(__CUDA_ARCH__)
    return __umulhi(n, mul) >> shift;
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(n) * mul) >> 32) >> shift;
#endif
  }
  // q = n / d, r = n % d
  TRICK_HD void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * d;
  }
};

}  // namespace cuda
}  // namespace trick
