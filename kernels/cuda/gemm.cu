// CUDA GEMM: our tiled kernel (kernels/cuda/igemm.cuh) or cuBLAS, chosen by the conv
// backend setting (kernels/backend.h): Own runs ours, Cublas and Cudnn run cuBLAS.
#include "kernels/backend.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/handles.h"
#include "kernels/cuda/igemm.cuh"
#include "kernels/gemm.h"

namespace trick {
namespace cuda {

namespace {

void check_gemm_sizes(int64_t M, int64_t N, int64_t K) {
  check_fits_int("gemm", "M", M, kMaxGemmDim);
  check_fits_int("gemm", "N", N, kMaxGemmDim);
  check_fits_int("gemm", "K", K, kMaxGemmDim);
}

template <bool TA, bool TB>
void run_own(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
             int64_t ldc, const igemm::Epilogue& ep) {
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  const igemm::Extent e{M, N, 1};
  igemm::with_tile(e, [&](auto tile) {
    using T = decltype(tile);
    igemm::launch_split("gemm", igemm::gemm_problem<TA, TB, T>(m, n, k, A, lda, B, ldb, C, ldc, ep), e);
  });
}

struct ScaleF {
  RowView c;
  float beta;
  __device__ void operator()(uint32_t r, uint32_t col) const {
    float& v = c.at(r, col);
    v = beta == 0.f ? 0.f : beta * v;
  }
};

}  // namespace

void scale_matrix(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  if (beta == 1.f) return;
  launch_map("gemm", M, N, ScaleF{{C, ldc}, beta});
}

void gemm_own(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias, bool relu) {
  if (M == 0 || N == 0) return;
  check_gemm_sizes(M, N, K);
  if (alpha == 0.f) K = 0;  // as in BLAS, A and B are then not read (NaN in them does not leak)
  igemm::Epilogue ep;
  ep.alpha = alpha, ep.beta = beta, ep.bias = bias, ep.relu = relu;
  if (!trans_a && !trans_b)
    run_own<false, false>(M, N, K, A, lda, B, ldb, C, ldc, ep);
  else if (!trans_a && trans_b)
    run_own<false, true>(M, N, K, A, lda, B, ldb, C, ldc, ep);
  else if (trans_a && !trans_b)
    run_own<true, false>(M, N, K, A, lda, B, ldb, C, ldc, ep);
  else
    run_own<true, true>(M, N, K, A, lda, B, ldb, C, ldc, ep);
}

void gemm_cublas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  check_gemm_sizes(M, N, K);
  check_fits_int("gemm", "lda", lda);
  check_fits_int("gemm", "ldb", ldb);
  check_fits_int("gemm", "ldc", ldc);
  if (K == 0 || alpha == 0.f) {
    scale_matrix(M, N, beta, C, ldc);
    return;
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first.
  const MathMode mode = math_mode();
  const cublasComputeType_t compute = mode == MathMode::TF32   ? CUBLAS_COMPUTE_32F_FAST_TF32
                                      : mode == MathMode::BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                               : CUBLAS_COMPUTE_32F;
  TRICK_CUBLAS_CHECK(cublasGemmEx(cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B, CUDA_R_32F,
                                  static_cast<int>(ldb), A, CUDA_R_32F, static_cast<int>(lda), &beta, C, CUDA_R_32F,
                                  static_cast<int>(ldc), compute, CUBLAS_GEMM_DEFAULT));
}

// Raw pointers carry no device: runs on the current one.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (conv_backend() == ConvBackend::Own)
    gemm_own(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    gemm_cublas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace cuda
}  // namespace trick
