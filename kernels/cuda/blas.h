// The two GEMM engines behind cuda::gemm and the convolutions' GEMM-shaped paths, on raw
// row-major device pointers (the conventions of kernels/gemm.h: C(M, N) = alpha * op(A) *
// op(B) + beta * C, beta == 0 means C is write-only).
#pragma once
#include <cstdint>

namespace trick {
namespace cuda {

// Our tiled kernel (kernels/cuda/igemm.cuh); the epilogue can also add bias[n] and apply
// ReLU (v > 0 ? v : 0), after the alpha/beta step. Always fp32.
void gemm_own(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr,
              bool relu = false);

// cuBLAS (cublasGemmEx), in the precision of math_mode() (kernels/backend.h).
void gemm_cublas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// C(M, N) = beta * C, or 0 when beta == 0 (C then write-only): the K == 0 / alpha == 0 case.
void scale_matrix(int64_t M, int64_t N, float beta, float* C, int64_t ldc);

// Largest size the int-indexed kernels take along any one GEMM dimension (room for a tile).
constexpr int64_t kMaxGemmDim = INT32_MAX - 256;

}  // namespace cuda
}  // namespace trick
