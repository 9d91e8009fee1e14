// The 6x16 AVX2/FMA sgemm micro-kernel (BLIS's Haswell/Zen shape: 12 accumulators, two B
// loads and six A broadcasts per k, 15 of the 16 ymm registers). Compiled with a target
// attribute, so the library builds without -march=native and the caller checks
// kernel_supported() at run time before using it.
#include "kernels/cpu/sgemm_kernel.h"

#include <immintrin.h>

namespace trick {
namespace cpu {
namespace sgemm {

bool kernel_supported() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
}

namespace {

// One row of the tile: v0, v1 hold columns [0, 8) and [8, 16).
__attribute__((target("avx2,fma"))) inline void store_row(float* c, __m256 v0, __m256 v1, int flags,
                                                         const float* bias) {
  if (flags & kLoadC) {
    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c + 8));
  }
  if (flags & kEpilogue) {
    if (bias) {
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias));
      v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias + 8));
    }
    if (flags & kRelu) {
      // max(v, 0) returns 0 for NaN, as the scalar ReLU (v > 0 ? v : 0) does.
      v0 = _mm256_max_ps(v0, _mm256_setzero_ps());
      v1 = _mm256_max_ps(v1, _mm256_setzero_ps());
    }
  }
  _mm256_storeu_ps(c, v0);
  _mm256_storeu_ps(c + 8, v1);
}

// The partial-tile store: the same arithmetic, element by element, on the valid part only.
void store_partial(const float* acc, float* const* crow, int64_t col0, int rows, int cols, int flags,
                   const float* bias) {
  for (int r = 0; r < rows; ++r) {
    float* c = crow[r] + col0;
    for (int j = 0; j < cols; ++j) {
      float v = acc[r * kNr + j];
      if (flags & kLoadC) v += c[j];
      if (flags & kEpilogue) {
        if (bias) v += bias[j];
        if (flags & kRelu) v = v > 0.f ? v : 0.f;
      }
      c[j] = v;
    }
  }
}

}  // namespace

namespace {

// The k loop of one segment: 12 accumulators, two B loads and six broadcasts per k.
#define TRICK_SGEMM_STEP(k)                          \
  {                                                  \
    const __m256 b0 = _mm256_load_ps(b);             \
    const __m256 b1 = _mm256_load_ps(b + 8);         \
    b += kNr;                                        \
    __m256 a = _mm256_broadcast_ss(a0 + (k));        \
    c00 = _mm256_fmadd_ps(a, b0, c00);               \
    c01 = _mm256_fmadd_ps(a, b1, c01);               \
    a = _mm256_broadcast_ss(a1 + (k));               \
    c10 = _mm256_fmadd_ps(a, b0, c10);               \
    c11 = _mm256_fmadd_ps(a, b1, c11);               \
    a = _mm256_broadcast_ss(a2 + (k));               \
    c20 = _mm256_fmadd_ps(a, b0, c20);               \
    c21 = _mm256_fmadd_ps(a, b1, c21);               \
    a = _mm256_broadcast_ss(a3 + (k));               \
    c30 = _mm256_fmadd_ps(a, b0, c30);               \
    c31 = _mm256_fmadd_ps(a, b1, c31);               \
    a = _mm256_broadcast_ss(a4 + (k));               \
    c40 = _mm256_fmadd_ps(a, b0, c40);               \
    c41 = _mm256_fmadd_ps(a, b1, c41);               \
    a = _mm256_broadcast_ss(a5 + (k));               \
    c50 = _mm256_fmadd_ps(a, b0, c50);               \
    c51 = _mm256_fmadd_ps(a, b1, c51);               \
  }

}  // namespace

__attribute__((target("avx2,fma"))) void kernel_6x16(const Segment* seg, int nseg, const float* b0,
                                                     float* const* crow, int64_t col0, int rows, int cols,
                                                     int flags, const float* bias) {
  const float* b = b0;
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int s = 0; s < nseg; ++s) {
    const float* a0 = seg[s].a[0];
    const float* a1 = seg[s].a[1];
    const float* a2 = seg[s].a[2];
    const float* a3 = seg[s].a[3];
    const float* a4 = seg[s].a[4];
    const float* a5 = seg[s].a[5];
    const int64_t len = seg[s].len;
    b = b0 + seg[s].boff;
#pragma GCC unroll 4
    for (int64_t k = 0; k < len; ++k) TRICK_SGEMM_STEP(k)
  }
  if (rows == kMr && cols == kNr) {
    const float* bb = bias ? bias + col0 : nullptr;
    store_row(crow[0] + col0, c00, c01, flags, bb);
    store_row(crow[1] + col0, c10, c11, flags, bb);
    store_row(crow[2] + col0, c20, c21, flags, bb);
    store_row(crow[3] + col0, c30, c31, flags, bb);
    store_row(crow[4] + col0, c40, c41, flags, bb);
    store_row(crow[5] + col0, c50, c51, flags, bb);
    return;
  }
  alignas(32) float acc[kMr * kNr];
  _mm256_store_ps(acc + 0 * kNr, c00), _mm256_store_ps(acc + 0 * kNr + 8, c01);
  _mm256_store_ps(acc + 1 * kNr, c10), _mm256_store_ps(acc + 1 * kNr + 8, c11);
  _mm256_store_ps(acc + 2 * kNr, c20), _mm256_store_ps(acc + 2 * kNr + 8, c21);
  _mm256_store_ps(acc + 3 * kNr, c30), _mm256_store_ps(acc + 3 * kNr + 8, c31);
  _mm256_store_ps(acc + 4 * kNr, c40), _mm256_store_ps(acc + 4 * kNr + 8, c41);
  _mm256_store_ps(acc + 5 * kNr, c50), _mm256_store_ps(acc + 5 * kNr + 8, c51);
  store_partial(acc, crow, col0, rows, cols, flags, bias ? bias + col0 : nullptr);
}

#undef TRICK_SGEMM_STEP

namespace {

// r[j] := column j of the 8x8 block whose rows are r[0..8).
__attribute__((target("avx2,fma"))) inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

}  // namespace

__attribute__((target("avx2,fma"))) void pack_b_transpose(const float* const* rows, int cols, int64_t n,
                                                          float* out) {
  int64_t k = 0;
  if (cols == kNr) {
    for (; k + 8 <= n; k += 8) {
      for (int half = 0; half < 2; ++half) {
        __m256 r[8];
        for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(rows[half * 8 + q] + k);
        transpose8(r);
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + (k + j) * kNr + half * 8, r[j]);
      }
    }
  }
  for (; k < n; ++k) {
    float* o = out + k * kNr;
    for (int q = 0; q < cols; ++q) o[q] = rows[q][k];
    for (int q = cols; q < kNr; ++q) o[q] = 0.f;
  }
}

__attribute__((target("avx2,fma"))) void pack_b_deal(const float* src, int64_t npanels, int last_cols, float* out,
                                                     int64_t out_stride) {
  for (int64_t p = 0; p < npanels; ++p) {
    const float* s = src + p * kNr;
    float* o = out + p * out_stride;
    if (p + 1 < npanels || last_cols == kNr) {
      _mm256_store_ps(o, _mm256_loadu_ps(s));
      _mm256_store_ps(o + 8, _mm256_loadu_ps(s + 8));
    } else {
      for (int q = 0; q < last_cols; ++q) o[q] = s[q];
      for (int q = last_cols; q < kNr; ++q) o[q] = 0.f;
    }
  }
}

}  // namespace sgemm
}  // namespace cpu
}  // namespace trick
