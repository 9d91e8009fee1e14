// Winograd convolutions on the CPU (Lavin and Gray, "Fast Algorithms for Convolutional Neural
// Networks", CVPR 2016), for 3x3 stride-1 layers with many output pixels: F(2x2, 3x3), and
// F(4x4, 3x3) with --cpu-conv winograd4.
//
// A 3x3 correlation with stride 1 is computed m x m outputs at a time from the (m + 2)^2 input
// tile around them: Y = A^T [ (G g G^T) .* (B^T d B) ] A, with, for m = 2,
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1]
// (m = 4: the 6x6, 6x3 and 4x6 matrices of Fm<4> below). Summed over the input channels, the
// element-wise product is (m + 2)^2 independent GEMMs, one per position of the transformed
// tile: M[pos](tiles, K) = V[pos](tiles, C) * U[pos](C, K). F(2x2): 16 multiplies per 4 outputs
// instead of 36 (2.25x fewer); F(4x4): 36 per 16 instead of 144 (4x). F(2x2)'s data transforms
// (B, A) only add and subtract, and its filter transform (G) only adds and halves (the halving
// is exact): its rounding stays at the direct sum's level (Inception's logits 1.2e-5 from fp64
// with either).
// F(4x4)'s coefficients reach 5 and 8 in B and A and 1/6 and 1/24 in G, and the rounding grows
// with them (3.2e-5, and more ReLU and max-pool decisions flip in the gradient), so it is the
// faster, less exact option, off by default. The filters are transformed in double.
// Non-finite inputs: a NaN or Inf pixel reaches every output of the tiles whose input it is in
// (up to 16 outputs with F(4x4), 9 with the direct sum), and an Inf becomes NaN in the
// transforms (Inf - Inf), which the fused ReLU turns into 0 as the direct engine's does.
//
// The weights are transformed once per call, straight into the micro-kernel's packed panel
// layout; then each pool thread takes a block of tiles: transforms its inputs into V, runs the
// GEMMs on the micro-kernel (gemm_rows_packed), and transforms M into the output pixels with
// bias, ReLU or accumulation. No atomics, and each tile is one thread's: the result does not
// depend on the thread count.
//
// The data gradient of a 3x3 stride-1 layer is itself such a correlation (of dy with the
// flipped, transposed filters, padded by 2 - pad), so it runs here too.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/prepared.h"
#include "kernels/cpu/sgemm_conv.h"
#include "kernels/cpu/sgemm_kernel.h"
#include "kernels/gemm.h"

namespace trick {
namespace cpu {

using sgemm::kNr;

namespace {

// Below this many output pixels the direct engine stays: the weights' transform (16 or 36 per
// 9 weights) is paid per call, and a GEMM of few rows reuses each weight little. Measured on
// the 2-core development machine, layer by layer (`trick bench --layers --cpu-conv
// packed|winograd`) and on Inception's 8x8 3x3 layer alone at batch 1 to 16: at batch 1 (64
// pixels) even, from batch 6 (384) F(2x2) 1.2-1.9x faster; F(4x4) loses there (few tiles, and
// 36 transformed filters of 448 x 384), hence its own rule in run_chosen.
constexpr int64_t kMinPixels = 384;
constexpr int64_t kBlockBytes = 384 * 1024;  // V + M of one block of tiles: about half of L2

// dst[b, y, x, k] (+)= sum over i, j < 3 and c < cin of src[b, y - pt + i, x - pl + j, c] * g(k, i, j, c),
// with src zero outside (sh, sw) and g(k, i, j, c) = w[k * wk + i * wi + j * wj + c * wc].
struct Corr {
  int64_t n = 0, sh = 0, sw = 0, cin = 0, lds = 0;
  const float* src = nullptr;
  int64_t oh = 0, ow = 0, cout = 0, ldd = 0;
  float* dst = nullptr;
  int64_t pt = 0, pl = 0;
  const float* w = nullptr;
  int64_t wk = 0, wi = 0, wj = 0, wc = 0;
  const Tensor* wt = nullptr;  // the tensor w points into (its transform may be kept: prepared.h)
  const float* bias = nullptr;
  bool relu = false, accumulate = false;

  int64_t tiles(int m) const { return n * ((oh + m - 1) / m) * ((ow + m - 1) / m); }
  int64_t panels() const { return (cout + kNr - 1) / kNr; }
};

struct Scratch {
  std::vector<float> u;     // the transformed, packed weights (the calling thread's)
  std::vector<float> vm;    // a block's V and M (each pool thread's)
  std::vector<float> zero;  // cin zeros: the rows of padding pixels
};
thread_local Scratch t_scratch;

// The two algorithms: F(m x m, 3x3) computes m x m outputs from an (m + 2)^2 input tile.
// Lavin and Gray's matrices (points 0, 1, -1 and infinity for m = 2; also 2, -2 for m = 4).
template <int M>
struct Fm;
template <>
struct Fm<2> {
  static constexpr int kA = 4;
  static constexpr double BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr double AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};
template <>
struct Fm<4> {
  static constexpr int kA = 6;
  static constexpr double BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  static constexpr double AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// u[pos][panel][c][q] = (G g G^T)[pos] of output channel panel * kNr + q, input channel c
// (zeros past cout), computed in double and rounded once: per position, the panels as the
// micro-kernel reads them. Each (panel, c) writes one 64-byte row per position, and reads 16
// filters' taps of channel c: the forward's lie 9 * cin apart but are read again for the next
// c (144 lines, in L1), the data gradient's are consecutive.
template <int M>
void transform_weights(const Corr& a, float* u) {
  using F = Fm<M>;
  constexpr int kA = F::kA;
  const int64_t panels = a.panels(), per_pos = panels * a.cin * kNr;
  parallel_range(panels * a.cin, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / a.cin, c = r % a.cin;
      const int cols = static_cast<int>(std::min<int64_t>(kNr, a.cout - p * kNr));
      float U[kA * kA][kNr] = {};
      for (int q = 0; q < cols; ++q) {
        const float* g = a.w + (p * kNr + q) * a.wk + c * a.wc;
        double t[kA][3] = {};  // G g
        for (int i = 0; i < kA; ++i)
          for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 3; ++k) t[i][j] += F::G[i][k] * g[k * a.wi + j * a.wj];
        for (int i = 0; i < kA; ++i)
          for (int j = 0; j < kA; ++j) {
            double v = 0;  // (G g G^T)[i][j]
            for (int k = 0; k < 3; ++k) v += t[i][k] * F::G[j][k];
            U[i * kA + j][q] = static_cast<float>(v);
          }
      }
      float* dst = u + (p * a.cin + c) * kNr;
      for (int pos = 0; pos < kA * kA; ++pos) std::memcpy(dst + pos * per_pos, U[pos], sizeof(U[pos]));
    }
  });
}

// Element-wise arithmetic on a float or on 8 floats (AVX2), so one transform serves the
// vectors and the tail.
#define TRICK_AVX2 __attribute__((target("avx2,fma")))
TRICK_AVX2 inline float v_load(const float* p, float) { return *p; }
TRICK_AVX2 inline void v_store(float* p, float v) { *p = v; }
TRICK_AVX2 inline float v_add(float a, float b) { return a + b; }
TRICK_AVX2 inline float v_sub(float a, float b) { return a - b; }
TRICK_AVX2 inline float v_mul(float c, float x) { return c * x; }
TRICK_AVX2 inline float v_madd(float c, float x, float acc) { return acc + c * x; }
TRICK_AVX2 inline float v_relu(float v) { return v > 0.f ? v : 0.f; }  // 0 for NaN, as max_ps(v, 0)
TRICK_AVX2 inline __m256 v_load(const float* p, __m256) { return _mm256_loadu_ps(p); }
TRICK_AVX2 inline void v_store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
TRICK_AVX2 inline __m256 v_add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
TRICK_AVX2 inline __m256 v_sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
TRICK_AVX2 inline __m256 v_mul(float c, __m256 x) { return _mm256_mul_ps(_mm256_set1_ps(c), x); }
TRICK_AVX2 inline __m256 v_madd(float c, __m256 x, __m256 acc) { return _mm256_fmadd_ps(_mm256_set1_ps(c), x, acc); }
TRICK_AVX2 inline __m256 v_relu(__m256 v) { return _mm256_max_ps(v, _mm256_setzero_ps()); }

// out[i * so] = sum over k of c[i][k] * in[k * si]: coefficients 1 and -1 as additions and
// subtractions, zeros skipped (the loops unroll and the branches fold at compile time).
template <int NO, int NI, class V>
TRICK_AVX2 inline void apply(const double (&c)[NO][NI], const V* in, int si, V* out, int so) {
#pragma GCC unroll 8
  for (int i = 0; i < NO; ++i) {
    V acc{};
    bool first = true;
#pragma GCC unroll 8
    for (int k = 0; k < NI; ++k) {
      const double w = c[i][k];
      if (w == 0) continue;
      const V x = in[k * si];
      if (w == 1)
        acc = first ? x : v_add(acc, x);
      else if (w == -1 && !first)
        acc = v_sub(acc, x);
      else
        acc = first ? v_mul(static_cast<float>(w), x) : v_madd(static_cast<float>(w), x, acc);
      first = false;
    }
    out[i * so] = acc;
  }
}

// The tile's image and first output pixel.
struct TileAt {
  int64_t b, y, x;
};
template <int M>
TileAt tile_at(const Corr& a, int64_t t) {
  const int64_t ty = (a.oh + M - 1) / M, tx = (a.ow + M - 1) / M, r = t % (ty * tx);
  return {t / (ty * tx), M * (r / tx), M * (r % tx)};
}

// V[pos][t][c] = (B^T d B)[pos] for channels [c, c + width of V) of one tile.
template <int M, class V>
TRICK_AVX2 inline void input_tile(const float* const* rows, int64_t c, float* out, int64_t ps) {
  using F = Fm<M>;
  constexpr int kA = F::kA;
  V d[kA * kA], s[kA * kA], v[kA * kA];
  for (int i = 0; i < kA * kA; ++i) d[i] = v_load(rows[i] + c, V{});
  for (int j = 0; j < kA; ++j) apply(F::BT, d + j, kA, s + j, kA);          // s = B^T d, column j
  for (int i = 0; i < kA; ++i) apply(F::BT, s + i * kA, 1, v + i * kA, 1);  // v = s B, row i
  for (int pos = 0; pos < kA * kA; ++pos) v_store(out + pos * ps + c, v[pos]);
}

template <int M>
TRICK_AVX2 void transform_input(const Corr& a, int64_t t0, int64_t nt, float* v, const float* zero) {
  constexpr int kA = Fm<M>::kA;
  const int64_t cin = a.cin, ps = nt * cin;
  for (int64_t t = 0; t < nt; ++t) {
    const TileAt at = tile_at<M>(a, t0 + t);
    const float* rows[kA * kA];
    for (int i = 0; i < kA; ++i)
      for (int j = 0; j < kA; ++j) {
        const int64_t y = at.y - a.pt + i, x = at.x - a.pl + j;
        const bool inside = y >= 0 && y < a.sh && x >= 0 && x < a.sw;
        rows[i * kA + j] = inside ? a.src + ((at.b * a.sh + y) * a.sw + x) * a.lds : zero;
      }
    float* out = v + t * cin;
    int64_t c = 0;
    for (; c + 8 <= cin; c += 8) input_tile<M, __m256>(rows, c, out, ps);
    for (; c < cin; ++c) input_tile<M, float>(rows, c, out, ps);
  }
}

// Output channels [k, k + width of V) of one tile: A^T m A, then (+ the old value) (+ bias)
// (ReLU), as the direct engine's store does.
template <int M, class V>
TRICK_AVX2 inline void output_tile(const Corr& a, const float* in, int64_t ps, int64_t k, float* const* out) {
  using F = Fm<M>;
  constexpr int kA = F::kA;
  V m[kA * kA], u[M * kA], y[M * M];
  for (int pos = 0; pos < kA * kA; ++pos) m[pos] = v_load(in + pos * ps + k, V{});
  for (int j = 0; j < kA; ++j) apply(F::AT, m + j, kA, u + j, kA);  // u = A^T m, column j
  for (int i = 0; i < M; ++i) apply(F::AT, u + i * kA, 1, y + i * M, 1);  // y = u A, row i
  for (int q = 0; q < M * M; ++q) {
    if (!out[q]) continue;
    V r = y[q];
    if (a.accumulate) r = v_add(r, v_load(out[q] + k, V{}));
    if (a.bias) r = v_add(r, v_load(a.bias + k, V{}));
    if (a.relu) r = v_relu(r);
    v_store(out[q] + k, r);
  }
}

// The output pixels of tiles [t0, t0 + nt) from M[pos][t][k] (row stride ldm).
template <int M>
TRICK_AVX2 void transform_output(const Corr& a, int64_t t0, int64_t nt, const float* m, int64_t ldm) {
  const int64_t ps = nt * ldm;
  for (int64_t t = 0; t < nt; ++t) {
    const TileAt at = tile_at<M>(a, t0 + t);
    float* out[M * M];  // row-major over the tile's outputs; null past the output's edge
    for (int q = 0; q < M * M; ++q) {
      const int64_t y = at.y + q / M, x = at.x + q % M;
      out[q] = y < a.oh && x < a.ow ? a.dst + ((at.b * a.oh + y) * a.ow + x) * a.ldd : nullptr;
    }
    const float* in = m + t * ldm;
    int64_t k = 0;
    for (; k + 8 <= a.cout; k += 8) output_tile<M, __m256>(a, in, ps, k, out);
    for (; k < a.cout; ++k) output_tile<M, float>(a, in, ps, k, out);
  }
}

template <int M>
void run(const Corr& a) {
  constexpr int kPos = Fm<M>::kA * Fm<M>::kA;
  const int64_t T = a.tiles(M), panels = a.panels(), ldm = panels * kNr;
  if (T == 0 || a.cout == 0) return;
  const int64_t per_pos = panels * a.cin * kNr;
  const auto build = [&](float* out) { transform_weights<M>(a, out); };
  std::shared_ptr<const float> kept;
  if (FrozenConvWeights::open()) {
    thread_local std::vector<int64_t> layout;  // reused: no allocation per call
    layout.assign({1, M, a.w - a.wt->data(), a.wk, a.wi, a.wj, a.wc, a.cin, a.cout});
    kept = prepared_weights(*a.wt, layout, static_cast<size_t>(kPos * per_pos), build);
  }
  const float* u = kept.get();
  if (!u) {
    float* out = sgemm::aligned_floats(t_scratch.u, static_cast<size_t>(kPos * per_pos));
    build(out);
    u = out;
  }

  // Tiles per block: each block reads all of U (kPos * cin * cout floats) and writes and reads
  // its V and M (kPos * (cin + cout) per tile). Enough tiles that V and M fill about half of L2,
  // or, where U is large (8x8 layers of 448 -> 384 channels: 11 MB), enough that U's traffic
  // is no more than V's and M's (cin * cout / (cin + cout) tiles); a multiple of the kernel's 6
  // rows; and with several threads, at least 2 blocks per thread.
  const int64_t threads = num_threads();
  const int64_t per_tile = kPos * (a.cin + ldm) * static_cast<int64_t>(sizeof(float));
  const auto rows6 = [](int64_t t) { return std::max<int64_t>(sgemm::kMr, (t + sgemm::kMr - 1) / sgemm::kMr * sgemm::kMr); };
  int64_t tb = rows6(std::max(kBlockBytes / per_tile, a.cin * ldm / (a.cin + ldm)));
  if (threads > 1) tb = std::min(tb, rows6((T + 2 * threads - 1) / (2 * threads)));
  const int64_t blocks = (T + tb - 1) / tb;
  parallel_for(blocks, [&](int64_t blk) {
    const int64_t t0 = blk * tb, nt = std::min(T, t0 + tb) - t0;
    Scratch& s = t_scratch;
    if (s.zero.size() < static_cast<size_t>(a.cin)) s.zero.assign(static_cast<size_t>(a.cin), 0.f);
    float* v = sgemm::aligned_floats(s.vm, static_cast<size_t>(kPos * nt * (a.cin + ldm)));
    float* m = v + kPos * nt * a.cin;
    transform_input<M>(a, t0, nt, v, s.zero.data());
    for (int pos = 0; pos < kPos; ++pos)
      gemm_rows_packed(v + pos * nt * a.cin, a.cin, nt, a.cin, u + pos * per_pos, a.cout, m + pos * nt * ldm, ldm);
    transform_output<M>(a, t0, nt, m, ldm);
  });
}

// 0: the engine's choice; 2 or 4: that tile wherever Winograd runs (set by the tests).
int& tile_setting() {
  static int m = 0;
  return m;
}

// The tile for a layer Winograd takes: 2, or with Winograd4 4 where each image has at least
// 12x12 outputs and there are at least 64 tiles of 4x4 (below, F(4x4) lost to F(2x2)).
int tile_for(ConvEngine e, int64_t n, int64_t oh, int64_t ow) {
  if (tile_setting()) return tile_setting();
  const int64_t tiles4 = n * ((oh + 3) / 4) * ((ow + 3) / 4);
  return e == ConvEngine::Winograd4 && oh >= 12 && ow >= 12 && tiles4 >= 64 ? 4 : 2;
}

void run_chosen(const Corr& a) {
  if (tile_for(conv_engine(), a.n, a.oh, a.ow) == 2)
    run<2>(a);
  else
    run<4>(a);
}

}  // namespace

void set_winograd_tile(int m) { tile_setting() = m == 2 || m == 4 ? m : 0; }
int winograd_tile() { return tile_setting(); }

bool winograd_takes(int64_t kh, int64_t kw, const Conv2dParams& p, int64_t cin, int64_t n, int64_t oh, int64_t ow) {
  return kh == 3 && kw == 3 && p.stride_h == 1 && p.stride_w == 1 && cin >= 16 && n * oh * ow >= kMinPixels;
}

int winograd_tile_for(ConvEngine e, int64_t kh, int64_t kw, const Conv2dParams& p, int64_t cin, int64_t n, int64_t oh,
                      int64_t ow) {
  if (!has_winograd(e)) return 0;
  if (!sgemm::kernel_supported() || !winograd_takes(kh, kw, p, cin, n, oh, ow)) return 0;
  return tile_for(e, n, oh, ow);
}

bool winograd_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) {
  Corr a;
  a.n = x.dim(0), a.sh = x.dim(1), a.sw = x.dim(2), a.cin = x.dim(3), a.lds = x.ld(), a.src = x.data();
  a.oh = y.dim(1), a.ow = y.dim(2), a.cout = y.dim(3), a.ldd = y.ld(), a.dst = y.data();
  if (!winograd_takes(w.dim(1), w.dim(2), p, a.cin, a.n, a.oh, a.ow)) return false;
  a.pt = p.pad_top, a.pl = p.pad_left;
  // g(k, i, j, c) = w[k, i, j, c]
  a.w = w.data(), a.wt = &w, a.wk = 9 * a.cin, a.wi = 3 * a.cin, a.wj = a.cin, a.wc = 1;
  a.bias = b.defined() ? b.data() : nullptr;
  a.relu = p.relu;
  run_chosen(a);
  return true;
}

bool winograd_conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  Corr a;
  a.n = dy.dim(0), a.sh = dy.dim(1), a.sw = dy.dim(2), a.cin = dy.dim(3), a.lds = dy.ld(), a.src = dy.data();
  a.oh = dx.dim(1), a.ow = dx.dim(2), a.cout = dx.dim(3), a.ldd = dx.ld(), a.dst = dx.data();
  if (!winograd_takes(w.dim(1), w.dim(2), p, a.cin, a.n, a.oh, a.ow)) return false;
  // dx[iy, ix, c] = sum of dy[iy + pt - i, ix + pl - j, o] * w[o, i, j, c]; with i' = 2 - i, a
  // correlation padded by 2 - pt, 2 - pl with g(c, i', j', o) = w[o, 2 - i', 2 - j', c].
  const int64_t C = a.cout;
  a.pt = 2 - p.pad_top, a.pl = 2 - p.pad_left;
  a.w = w.data() + 8 * C, a.wt = &w, a.wk = 1, a.wi = -3 * C, a.wj = -C, a.wc = 9 * C;
  a.accumulate = accumulate;
  run_chosen(a);
  return true;
}

}  // namespace cpu
}  // namespace trick
