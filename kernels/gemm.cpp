#include "kernels/gemm.h"

#include <vector>

#include "kernels/backend.h"
#include "kernels/check.h"
#include "kernels/cpu/tensor_core_emulation.h"

namespace trick {

void gemm(Device device, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  TRICK_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  TRICK_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N, "gemm: leading dimension too small");
  const MathMode m = math_mode();
  if (device.is_cpu() && m != MathMode::FP32 && M > 0 && N > 0 && K > 0 && alpha != 0.f) {
    // Emulated (kernels/cpu/tensor_core_emulation.h): both operands rounded, as our kernel
    // stores them (with alpha 0 it reads neither, as BLAS, and neither does this).
    const int64_t ar = trans_a ? K : M, ac = trans_a ? M : K, br = trans_b ? N : K, bc = trans_b ? K : N;
    std::vector<float> a(static_cast<size_t>(ar * ac)), b(static_cast<size_t>(br * bc));
    cpu::tensor_core_round_matrix(m, ar, ac, A, lda, a.data());
    cpu::tensor_core_round_matrix(m, br, bc, B, ldb, b.data());
    return cpu::gemm(trans_a, trans_b, M, N, K, alpha, a.data(), ac, b.data(), bc, beta, C, ldc);
  }
  TRICK_DISPATCH("gemm", device, gemm, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void matmul_nt(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  const Device dev = check_same_device("matmul", {&x, &w, &y});
  check_ndim("matmul", "x", x, 2);
  check_ndim("matmul", "w", w, 2);
  check_row_strided("matmul", "x", x);
  check_row_strided("matmul", "w", w);
  check_row_strided("matmul", "y", y);
  TRICK_CHECK(x.dim(1) == w.dim(1), "matmul: x ", x.shape().str(), " and w ", w.shape().str(),
              " differ in the inner dimension");
  check_shape("matmul", "y", y, Shape{x.dim(0), w.dim(0)});
  gemm(dev, false, true, x.dim(0), w.dim(0), x.dim(1), 1.f, x.data(), x.ld(), w.data(), w.ld(),
       accumulate ? 1.f : 0.f, y.data(), y.ld());
}

}  // namespace trick
