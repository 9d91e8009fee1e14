// Implicit-GEMM convolutions on the CPU (NHWC, fp32), built on the 6x16 micro-kernel in
// kernels/cpu/sgemm_kernel.h: no im2col buffer (the kernel reads input pixels in place),
// bias + ReLU in the GEMM's store, and the data gradient as a convolution of dy with the
// flipped weights, split into stride phases for strided layers (no zero insertion, no col2im).
//
// The OpenBLAS path (im2col + sgemm + col2im, kernels/cpu/conv.cpp) stays as the fallback:
// for CPUs without AVX2/FMA, for the weight gradient, and on request (tests run both).
// Fewer than 16 input channels (the 3-channel first layer) take explicit im2col / col2im
// around the same kernel: with so few channels per tap the in-place segments are too short.
#pragma once
#include "kernels/conv.h"

namespace trick {
namespace cpu {

enum class ConvEngine {
  Packed,  // the implicit-GEMM kernels in this file (when the CPU has AVX2 + FMA)
  Blas,    // im2col + OpenBLAS sgemm + col2im
};

// The engine CPU convolutions use. Starts as Packed where supported, unless the environment
// sets TRICK_CPU_CONV=blas. Setting Packed on a CPU without AVX2/FMA keeps Blas.
void set_conv_engine(ConvEngine e);
ConvEngine conv_engine();
const char* conv_engine_name();

// y = relu?(conv(x, w) + b). Returns false (nothing written) when this engine does not take
// the case; the caller then runs the Blas path.
bool packed_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y);
// dx (+)= dgrad(dy, w). Returns false (nothing written) when this engine does not take the case.
bool packed_conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);

}  // namespace cpu
}  // namespace trick
