// Dense matrix products on raw row-major data, dispatched on the device.
// CPU: OpenBLAS sgemm. CUDA: our own tiled kernel, or cuBLAS when selected (kernels/backend.h).
#pragma once
#include <cstdint>

#include "tensor/tensor.h"

namespace trick {

// C(M, N) = alpha * op(A) * op(B) + beta * C, all row-major with leading dimensions.
// op(A) is (M, K): A is (M, K) with lda >= K, or (K, M) with lda >= M when trans_a.
// op(B) is (K, N): B is (K, N) with ldb >= N, or (N, K) with ldb >= K when trans_b.
// beta == 0 means C is write-only (its old contents, NaN included, are ignored).
void gemm(Device device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Tensor-level: y(M, N) = x(M, K) * w(N, K)^T (+ y if accumulate). x and y row-strided.
void matmul_nt(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate = false);

namespace cpu {
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
}
namespace cuda {
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
}

// How many threads CPU kernels use (OpenMP loops and OpenBLAS). 0 = all cores.
void set_num_threads(int n);
int num_threads();

}  // namespace trick
