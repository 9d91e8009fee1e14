// Shared by the CUDA tests (tests/test_cuda.cpp) and the host replay of the tiled kernels
// (tests/test_igemm_replay.cpp): the error bounds against the CPU and a convolution case.
#pragma once

namespace trick {

constexpr double kFp32Bound = 1e-5;
// TF32 rounds inputs to a 10-bit mantissa (relative error up to 2^-11 ~ 4.9e-4 per
// operand); over a few hundred random-sign products the relative L2 error of a GEMM is a
// few 1e-4, so 5e-3 passes TF32 and still fails on a wrong index or a missing term.
constexpr double kTf32Bound = 5e-3;
// bf16 keeps an 8-bit significand (relative error up to 2^-8 ~ 3.9e-3 per operand, 8 times
// TF32's): a GEMM's relative L2 error is a few 1e-3, so 3e-2.
constexpr double kBf16Bound = 3e-2;

// A convolution: input (n, h, w, c), weights (o, kh, kw, c), strides, pads (top, bottom,
// left, right), and whether input and output are channel slices of wider tensors.
struct ConvCase {
  int n, h, w, c, o, kh, kw, sh, sw, pt, pb, pl, pr;
  bool slice_x, slice_y;
};

}  // namespace trick
