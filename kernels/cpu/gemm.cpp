// CPU GEMM through OpenBLAS, and the thread count shared by OpenBLAS and our OpenMP loops.
#include <cblas.h>
#include <omp.h>

#include <thread>

#include "kernels/gemm.h"

namespace trick {

namespace {
int& thread_setting() {
  static int n = 0;
  return n;
}
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  thread_setting() = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return thread_setting() ? thread_setting() : omp_get_max_threads(); }

namespace cpu {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

}  // namespace cpu
}  // namespace trick
