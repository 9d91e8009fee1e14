// The tensor-core math modes on the CPU, emulated: with math_mode() TF32 or BF16
// (kernels/backend.h), every convolution (forward, data and weight gradient) and every GEMM
// on the CPU first rounds both of its operands as our GPU kernel rounds them into shared
// memory (kernels/tensor_core_rounding.h: the same functions), then multiplies them on the
// fp32 engines, which sum in fp32. The one exception is the GPU's too: the data gradient of
// a layer with at most 4 input channels stays fp32 (small_c_dgrad; not a 1x1 one's, a GEMM). Each product our GPU
// kernel computes then differs from this only by the order of its fp32 sums (a GPU test holds
// it to 1e-4), so the error a mode costs can be measured (`trick precision`) on a machine
// without a GPU: through a network, in size, not bit for bit (any fp32-sized difference moves
// some roundings a whole TF32 or bf16 step, and that grows from layer to layer; on Inception
// v3 two fp32 sum orders end up about as far apart as the mode from fp32). It is slower, not
// faster: each operand is copied once more. Biases, the
// accumulated-into output and every other op stay fp32, as on the GPU. (cuBLAS and cuDNN
// round in ways of their own, not emulated.)
#pragma once
#include <cstdint>

#include "kernels/backend.h"
#include "tensor/tensor.h"

namespace trick {
namespace cpu {

// A contiguous copy of x (any row-strided tensor on the CPU) with every element rounded for
// `mode` (TF32 or BF16).
Tensor tensor_core_rounded(const Tensor& x, MathMode mode);
// The same for a layer's weights; inside a FrozenConvWeights scope (kernels/conv.h) the
// rounded copy is kept with the prepared weights, so the engines' own prepared copies of it
// are kept too.
Tensor tensor_core_rounded_weights(const Tensor& w, MathMode mode);
// rows x cols of a row-major matrix with leading dimension ld, rounded, into out (ld cols).
void tensor_core_round_matrix(MathMode mode, int64_t rows, int64_t cols, const float* in, int64_t ld, float* out);

}  // namespace cpu
}  // namespace trick
