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
#include <string>

#include "kernels/conv.h"

namespace trick {
namespace cpu {

enum class ConvEngine {
  Winograd,   // Packed, with 3x3 stride-1 layers of many pixels by Winograd F(2x2, 3x3) (winograd.cpp)
  Winograd4,  // Winograd, with F(4x4, 3x3) on the larger of those layers: faster, less exact
  Packed,     // the implicit-GEMM kernels in this file (when the CPU has AVX2 + FMA)
  Blas,       // im2col + OpenBLAS sgemm + col2im
};

// The engine CPU convolutions use. Starts as Winograd where supported, unless the environment
// sets TRICK_CPU_CONV=winograd4, packed (no Winograd) or blas. Setting any but Blas on a CPU
// without AVX2/FMA keeps Blas.
void set_conv_engine(ConvEngine e);
inline bool has_winograd(ConvEngine e) { return e == ConvEngine::Winograd || e == ConvEngine::Winograd4; }
ConvEngine conv_engine();
const char* conv_engine_name();

// y = relu?(conv(x, w) + b). Returns false (nothing written) when this engine does not take
// the case; the caller then runs the Blas path.
bool packed_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y);
// dx (+)= dgrad(dy, w). Returns false (nothing written) when this engine does not take the case.
bool packed_conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);

// The engine's name for TRICK_CPU_CONV and `--cpu-conv`: "winograd", "winograd4", "packed" or
// "blas"; parse_conv_engine returns false for anything else.
const char* conv_engine_key(ConvEngine e);
bool parse_conv_engine(const std::string& s, ConvEngine* e);

// Winograd F(m x m, 3x3) (kernels/cpu/winograd.cpp), used by the Winograd engines: whether it
// takes a layer (3x3, stride 1, at least 16 input channels, at least 384 output pixels), and
// the forward and data gradient, which return false (nothing written) when it does not. The
// tile m is 2, or with the Winograd4 engine 4 where each image has at least 12x12 outputs and
// the layer at least 64 tiles of 4x4. set_winograd_tile(2 or 4) forces one wherever Winograd
// runs (the tests run both everywhere); 0 goes back to the engine's choice.
bool winograd_takes(int64_t kh, int64_t kw, const Conv2dParams& p, int64_t cin, int64_t n, int64_t oh, int64_t ow);
void set_winograd_tile(int m);
int winograd_tile();
// The algorithm engine e runs a convolution (or, with cin the output channels and oh, ow the
// input's size, its data gradient) with: 0 direct (implicit GEMM or OpenBLAS), or the
// Winograd tile, 2 or 4.
int winograd_tile_for(ConvEngine e, int64_t kh, int64_t kw, const Conv2dParams& p, int64_t cin, int64_t n, int64_t oh,
                      int64_t ow);
bool winograd_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y);
bool winograd_conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);

// C(rows, n) = A(rows, k) * B on the calling thread, with the micro-kernel: A's rows lda
// floats apart, B packed as the kernel reads it (panels of kNr columns, each k rows of kNr
// floats, 64-byte aligned, zeros past column n), C's rows ldc apart.
void gemm_rows_packed(const float* a, int64_t lda, int64_t rows, int64_t k, const float* packed, int64_t n, float* c,
                      int64_t ldc);

}  // namespace cpu
}  // namespace trick
