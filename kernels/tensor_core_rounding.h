// How the tensor cores see an fp32 operand in MathMode::TF32 and MathMode::BF16
// (kernels/backend.h): rounded to TF32 (10-bit mantissa) or bfloat16 (7-bit mantissa), then
// multiplied exactly and summed in fp32. Our GPU kernel rounds each element with these as it
// stages it into shared memory (kernels/cuda/igemm.h), and the CPU emulates the modes with
// the same functions (kernels/cpu/tensor_core_emulation.h), so both round bit for bit alike.
// Plain C++ with __host__ __device__ under nvcc.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/host_device.h"

namespace trick {

TRICK_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

TRICK_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// x rounded to TF32's 10-bit mantissa, to nearest with ties away from zero (what PTX's
// cvt.rna.tf32.f32 does), as a float whose low 13 bits are zero; Inf and NaN unchanged.
TRICK_HD float round_tf32(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return bits_float(u);
}

// x rounded to bfloat16 (8-bit significand), to nearest with ties to even (what PTX's
// cvt.rn.bf16.f32 and __float2bfloat16_rn do), as its 16 bits; too large rounds to Inf,
// NaN stays NaN (made quiet).
TRICK_HD uint16_t bf16_bits(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
TRICK_HD float round_bf16(float x) { return bits_float(static_cast<uint32_t>(bf16_bits(x)) << 16); }

// The one product our GPU kernels leave off the tensor cores: the data gradient of a
// convolution with at most 4 input channels whose weights fit 8192 floats (the first layer,
// whose gradient is the attack's) runs one thread per input pixel in fp32 in every math mode
// (kernels/cuda/conv.cu, dgrad_small_c); the CPU's emulation leaves it unrounded too. Not a
// pointwise layer's (1x1, stride 1, unpadded), whatever its channels: that one is a GEMM,
// on the tensor cores like every other, and the GPU takes that path first.
constexpr int kSmallCDgradMaxC = 4;
constexpr int64_t kSmallCDgradMaxWeights = 8192;
TRICK_HD bool small_c_dgrad(int64_t c, int64_t weight_floats, bool pointwise) {
  return !pointwise && c <= kSmallCDgradMaxC && weight_floats <= kSmallCDgradMaxWeights;
}

}  // namespace trick
