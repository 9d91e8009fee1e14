// One tensor-core product on its own, as a diagnostic for tests/test_cuda.cpp: if the tiled
// tensor-core kernel (kernels/cuda/igemm.cuh) disagrees with the CPU, this tells whether
// the hardware agrees with our fragment tables (MmaTf32, MmaBf16 in kernels/cuda/igemm.h)
// at all, apart from the tiling, the loaders and the split-K reduction.
#pragma once
#include "kernels/backend.h"

namespace trick {
namespace cuda {

// k of one mma.sync in `mode`: 8 for TF32 (m16n8k8), 16 for bf16 (m16n8k16).
int mma_probe_k(MathMode mode);

// d (16 x 8) = a (16 x K) * b (K x 8), all row-major host arrays, K = mma_probe_k(mode), by
// one warp's single mma.sync in `mode` (TF32 or BF16) on the current device: the elements
// staged into shared memory by stage<M>() and read into fragments by M's index functions,
// as the tiled kernel does. Throws for FP32 or below compute capability 8.0.
void mma_probe(MathMode mode, const float* a, const float* b, float* d);

}  // namespace cuda
}  // namespace trick
