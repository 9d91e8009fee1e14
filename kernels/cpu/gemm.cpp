// CPU GEMM through OpenBLAS, except for a few rows (a linear layer at batch 1, a
// matrix-vector product bound by reading the weights), which run on our own thread pool:
// OpenBLAS's OpenMP threads keep spinning after each call, on the cores the pool's workers
// need next. And the thread count shared by OpenBLAS and the pool.
#include <cblas.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/gemm.h"
#include "tensor/error.h"

namespace trick {

namespace {
// OpenBLAS 0.3.21 (Debian 12) maps 128 MiB of address space for a buffer of each of its
// threads (at start, and when the thread count rises) and one more at its first GEMM, keeping
// them for reuse; when such a map fails it tries again, forever (OpenBLAS issue #5289, fixed in
// later releases). Under an address-space limit (ulimit -v) a command whose tensors had filled
// the limit spun there at 100% CPU instead of failing. So under such a limit the room for the
// buffers is tried first, with a map of that size: an out-of-memory error (which the commands
// give context, "while timing batch 64 ...") instead of the endless retry. Without a limit,
// nothing is checked. (The buffers mapped before main, one per core, are out of reach: under a
// limit below about 100 MB + 128 MB per core, trick hangs before it starts; measured on 2 cores.)
void check_room_for_blas_buffers(int buffers, const std::string& what, const std::string& advice = "") {
  struct rlimit limit {};
  if (buffers <= 0 || getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
  const size_t bytes = (size_t{128} * static_cast<size_t>(buffers) + 8) << 20;  // and a little slack
  void* probe = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (probe == MAP_FAILED)
    fail("out of memory: ", what, " under the address-space limit (ulimit -v, ", limit.rlim_cur >> 20, " MiB)", advice);
  munmap(probe, bytes);
}

int& thread_setting() {
  static int n = 0;
  return n;
}
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  const int more = n - openblas_get_num_threads();
  if (more > 0)
    check_room_for_blas_buffers(more,
                                cat(n, " threads need ", more, " more OpenBLAS buffers of 128 MiB, which do not fit"),
                                ": use fewer threads");
  thread_setting() = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return thread_setting() ? thread_setting() : omp_get_max_threads(); }

namespace cpu {

namespace {

constexpr int64_t kFewRows = 4;  // at most this many rows of C take the path below

// C(M, N) = alpha * A(M, K) * op(B) + beta * C for M <= kFewRows: columns of C in parallel
// blocks, each a dot product (trans_b: B is (N, K)) or a sum of scaled rows of B (B is (K, N)).
void gemm_few_rows(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                   const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  parallel_range(N, std::max<int64_t>(16, 65536 / std::max<int64_t>(K, 1)), [&](int64_t n0, int64_t n1) {
    std::vector<float> acc(static_cast<size_t>(n1 - n0));
    for (int64_t m = 0; m < M; ++m) {
      const float* a = A + m * lda;
      if (trans_b) {
        for (int64_t n = n0; n < n1; ++n) {
          const float* b = B + n * ldb;
          // 16 interleaved partial sums: lanes the compiler vectorises without reassociating.
          float part[16] = {};
          int64_t k = 0;
          for (; k + 16 <= K; k += 16)
            for (int j = 0; j < 16; ++j) part[j] += a[k + j] * b[k + j];
          float s = 0.f;
          for (; k < K; ++k) s += a[k] * b[k];
          for (int j = 0; j < 16; ++j) s += part[j];
          acc[n - n0] = s;
        }
      } else {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t k = 0; k < K; ++k) {
          const float ak = a[k];
          const float* b = B + k * ldb + n0;
          for (int64_t n = 0; n < n1 - n0; ++n) acc[n] += ak * b[n];
        }
      }
      float* c = C + m * ldc + n0;
      for (int64_t n = 0; n < n1 - n0; ++n)
        c[n] = beta == 0.f ? alpha * acc[n] : alpha * acc[n] + beta * c[n];  // beta 0: old C never read
    }
  });
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (!trans_a && M <= kFewRows && K > 0) {
    gemm_few_rows(trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  if (K == 0) {  // C = beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  static const bool room_checked =  // tried again after a failure
      (check_room_for_blas_buffers(1, "cannot allocate OpenBLAS's 128 MiB GEMM buffer on the host"), true);
  (void)room_checked;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

}  // namespace cpu
}  // namespace trick
