// Winograd F(2x2, 3x3) convolutions on the CPU (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", CVPR 2016), for 3x3 stride-1 layers with many output pixels.
//
// A 3x3 correlation with stride 1 is computed 2x2 outputs at a time from the 4x4 input tile
// around them: Y = A^T [ (G g G^T) .* (B^T d B) ] A, with
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// Summed over the input channels, the element-wise product is 16 independent GEMMs (one per
// position of the 4x4 transformed tile): M[pos](tiles, K) = V[pos](tiles, C) * U[pos](C, K).
// That is 16 multiplies per 4 outputs instead of 36: 2.25x fewer. The transforms of the data
// (B, A) only add and subtract, and the filter's (G) halves, which is exact in binary, so the
// rounding stays close to the direct sum's; the tests hold both engines to the same bound.
//
// The weights are transformed once per call, straight into the micro-kernel's packed panel
// layout; then each pool thread takes a block of tiles: transforms its inputs into V (kept
// in L2 with M), runs the 16 GEMMs on the micro-kernel (gemm_rows_packed), and transforms M
// into the output pixels with bias, ReLU or accumulation. No atomics, and each tile is one
// thread's: the result does not depend on the thread count.
//
// The data gradient of a 3x3 stride-1 layer is itself such a correlation (of dy with the
// flipped, transposed filters, padded by 2 - pad), so it runs here too.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/sgemm_conv.h"
#include "kernels/cpu/sgemm_kernel.h"
#include "kernels/gemm.h"

namespace trick {
namespace cpu {

using sgemm::kNr;

namespace {

constexpr int kPos = 16;  // positions of the 4x4 transformed tile
// Below this many tiles (2x2 outputs) the direct engine stays: the weights' transform
// (16 per 9 weights) is paid per call, and a GEMM of few rows reuses each weight little.
// Measured on the 2-core development machine, layer by layer (`trick bench --layers
// --cpu-conv packed|winograd`) and on Inception's 8x8 3x3 layer alone at batch 1 to 16: at
// batch 1 (16 tiles) even, from batch 6 (96 tiles) Winograd 1.2-1.9x faster.
constexpr int64_t kMinTiles = 96;
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
  const float* bias = nullptr;
  bool relu = false, accumulate = false;

  int64_t tiles_y() const { return (oh + 1) / 2; }
  int64_t tiles_x() const { return (ow + 1) / 2; }
  int64_t tiles() const { return n * tiles_y() * tiles_x(); }
  int64_t panels() const { return (cout + kNr - 1) / kNr; }
};

struct Scratch {
  std::vector<float> u;     // the transformed, packed weights (the calling thread's)
  std::vector<float> vm;    // a block's V and M (each pool thread's)
  std::vector<float> zero;  // cin zeros: the rows of padding pixels
};
thread_local Scratch t_scratch;

float* aligned(std::vector<float>& v, size_t floats) {
  if (v.size() < floats + 16) v.resize(floats + 16);
  const uintptr_t a = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((a + 63) & ~uintptr_t{63});
}

// u[pos][panel][c][q] = (G g G^T)[pos] of output channel panel * kNr + q, input channel c
// (zeros past cout): per position, the panels as the micro-kernel reads them. Each (panel, c)
// writes one 64-byte row per position, and reads 16 filters' taps of channel c: the forward's
// lie 9 * cin apart but are read again for the next c (144 lines, in L1), the data gradient's
// are consecutive.
void transform_weights(const Corr& a, float* u) {
  const int64_t panels = a.panels(), per_pos = panels * a.cin * kNr;
  parallel_range(panels * a.cin, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t p = r / a.cin, c = r % a.cin;
      const int cols = static_cast<int>(std::min<int64_t>(kNr, a.cout - p * kNr));
      float U[kPos][kNr] = {};
      for (int q = 0; q < cols; ++q) {
        const float* g = a.w + (p * kNr + q) * a.wk + c * a.wc;
        float t[4][3];
        for (int j = 0; j < 3; ++j) {
          const float g0 = g[j * a.wj], g1 = g[a.wi + j * a.wj], g2 = g[2 * a.wi + j * a.wj];
          t[0][j] = g0;
          t[1][j] = 0.5f * (g0 + g1 + g2);
          t[2][j] = 0.5f * (g0 - g1 + g2);
          t[3][j] = g2;
        }
        for (int i = 0; i < 4; ++i) {
          U[4 * i + 0][q] = t[i][0];
          U[4 * i + 1][q] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
          U[4 * i + 2][q] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
          U[4 * i + 3][q] = t[i][2];
        }
      }
      float* dst = u + (p * a.cin + c) * kNr;
      for (int pos = 0; pos < kPos; ++pos) std::memcpy(dst + pos * per_pos, U[pos], sizeof(U[pos]));
    }
  });
}

// The tile's image and first output pixel.
struct TileAt {
  int64_t b, y, x;
};
TileAt tile_at(const Corr& a, int64_t t) {
  const int64_t per_img = a.tiles_y() * a.tiles_x(), r = t % per_img;
  return {t / per_img, 2 * (r / a.tiles_x()), 2 * (r % a.tiles_x())};
}

// V[pos][t][c] = (B^T d B)[pos] for tiles [t0, t0 + nt), d the tile's 4x4 input pixels.
__attribute__((target("avx2,fma"))) void transform_input(const Corr& a, int64_t t0, int64_t nt, float* v,
                                                         const float* zero) {
  const int64_t cin = a.cin, ps = nt * cin;
  for (int64_t t = 0; t < nt; ++t) {
    const TileAt at = tile_at(a, t0 + t);
    const float* rows[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t y = at.y - a.pt + i, x = at.x - a.pl + j;
        const bool inside = y >= 0 && y < a.sh && x >= 0 && x < a.sw;
        rows[i][j] = inside ? a.src + ((at.b * a.sh + y) * a.sw + x) * a.lds : zero;
      }
    float* out = v + t * cin;
    int64_t c = 0;
    for (; c + 8 <= cin; c += 8) {
      __m256 s[4][4];
      for (int j = 0; j < 4; ++j) {
        const __m256 d0 = _mm256_loadu_ps(rows[0][j] + c), d1 = _mm256_loadu_ps(rows[1][j] + c);
        const __m256 d2 = _mm256_loadu_ps(rows[2][j] + c), d3 = _mm256_loadu_ps(rows[3][j] + c);
        s[0][j] = _mm256_sub_ps(d0, d2);
        s[1][j] = _mm256_add_ps(d1, d2);
        s[2][j] = _mm256_sub_ps(d2, d1);
        s[3][j] = _mm256_sub_ps(d1, d3);
      }
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(out + (4 * i + 0) * ps + c, _mm256_sub_ps(s[i][0], s[i][2]));
        _mm256_storeu_ps(out + (4 * i + 1) * ps + c, _mm256_add_ps(s[i][1], s[i][2]));
        _mm256_storeu_ps(out + (4 * i + 2) * ps + c, _mm256_sub_ps(s[i][2], s[i][1]));
        _mm256_storeu_ps(out + (4 * i + 3) * ps + c, _mm256_sub_ps(s[i][1], s[i][3]));
      }
    }
    for (; c < cin; ++c) {
      float s[4][4];
      for (int j = 0; j < 4; ++j) {
        const float d0 = rows[0][j][c], d1 = rows[1][j][c], d2 = rows[2][j][c], d3 = rows[3][j][c];
        s[0][j] = d0 - d2, s[1][j] = d1 + d2, s[2][j] = d2 - d1, s[3][j] = d1 - d3;
      }
      for (int i = 0; i < 4; ++i) {
        out[(4 * i + 0) * ps + c] = s[i][0] - s[i][2];
        out[(4 * i + 1) * ps + c] = s[i][1] + s[i][2];
        out[(4 * i + 2) * ps + c] = s[i][2] - s[i][1];
        out[(4 * i + 3) * ps + c] = s[i][1] - s[i][3];
      }
    }
  }
}

// One output value: (+ the old value) (+ bias), (ReLU), as the direct engine's store does.
inline float finish(float v, const float* old, const float* bias, bool relu) {
  if (old) v += *old;
  if (bias) v += *bias;
  if (relu) v = v > 0.f ? v : 0.f;  // 0 for NaN, like the micro-kernel's max(v, 0)
  return v;
}

// The output pixels of tiles [t0, t0 + nt) from M[pos][t][k] (row stride ldm): A^T m A.
__attribute__((target("avx2,fma"))) void transform_output(const Corr& a, int64_t t0, int64_t nt, const float* m,
                                                          int64_t ldm) {
  const int64_t ps = nt * ldm;
  for (int64_t t = 0; t < nt; ++t) {
    const TileAt at = tile_at(a, t0 + t);
    float* out[4];  // (0, 0), (0, 1), (1, 0), (1, 1); null past the output's edge
    for (int q = 0; q < 4; ++q) {
      const int64_t y = at.y + q / 2, x = at.x + q % 2;
      out[q] = y < a.oh && x < a.ow ? a.dst + ((at.b * a.oh + y) * a.ow + x) * a.ldd : nullptr;
    }
    const float* in = m + t * ldm;
    int64_t k = 0;
    for (; k + 8 <= a.cout; k += 8) {
      __m256 u0[4], u1[4];
      for (int j = 0; j < 4; ++j) {
        const __m256 m0 = _mm256_loadu_ps(in + (0 + j) * ps + k), m1 = _mm256_loadu_ps(in + (4 + j) * ps + k);
        const __m256 m2 = _mm256_loadu_ps(in + (8 + j) * ps + k), m3 = _mm256_loadu_ps(in + (12 + j) * ps + k);
        u0[j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        u1[j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
      }
      __m256 y[4] = {_mm256_add_ps(_mm256_add_ps(u0[0], u0[1]), u0[2]), _mm256_sub_ps(_mm256_sub_ps(u0[1], u0[2]), u0[3]),
                     _mm256_add_ps(_mm256_add_ps(u1[0], u1[1]), u1[2]), _mm256_sub_ps(_mm256_sub_ps(u1[1], u1[2]), u1[3])};
      for (int q = 0; q < 4; ++q) {
        if (!out[q]) continue;
        __m256 r = y[q];
        if (a.accumulate) r = _mm256_add_ps(r, _mm256_loadu_ps(out[q] + k));
        if (a.bias) r = _mm256_add_ps(r, _mm256_loadu_ps(a.bias + k));
        if (a.relu) r = _mm256_max_ps(r, _mm256_setzero_ps());
        _mm256_storeu_ps(out[q] + k, r);
      }
    }
    for (; k < a.cout; ++k) {
      float u0[4], u1[4];
      for (int j = 0; j < 4; ++j) {
        const float m0 = in[(0 + j) * ps + k], m1 = in[(4 + j) * ps + k];
        const float m2 = in[(8 + j) * ps + k], m3 = in[(12 + j) * ps + k];
        u0[j] = (m0 + m1) + m2;
        u1[j] = (m1 - m2) - m3;
      }
      const float y[4] = {(u0[0] + u0[1]) + u0[2], (u0[1] - u0[2]) - u0[3], (u1[0] + u1[1]) + u1[2],
                          (u1[1] - u1[2]) - u1[3]};
      for (int q = 0; q < 4; ++q)
        if (out[q])
          out[q][k] = finish(y[q], a.accumulate ? out[q] + k : nullptr, a.bias ? a.bias + k : nullptr, a.relu);
    }
  }
}

void run(const Corr& a) {
  const int64_t T = a.tiles(), panels = a.panels(), ldm = panels * kNr;
  if (T == 0 || a.cout == 0) return;
  const int64_t per_pos = panels * a.cin * kNr;
  float* u = aligned(t_scratch.u, static_cast<size_t>(kPos * per_pos));
  transform_weights(a, u);

  // Tiles per block: V and M of a block within kBlockBytes, a multiple of the kernel's 6 rows,
  // and, with several threads, about 4 blocks per thread.
  const int64_t threads = num_threads();
  const int64_t per_tile = kPos * (a.cin + ldm) * static_cast<int64_t>(sizeof(float));
  int64_t tb = std::max<int64_t>(sgemm::kMr, kBlockBytes / per_tile / sgemm::kMr * sgemm::kMr);
  if (threads > 1) {
    const int64_t even = (T + 4 * threads - 1) / (4 * threads);
    tb = std::min(tb, std::max<int64_t>(sgemm::kMr, (even + sgemm::kMr - 1) / sgemm::kMr * sgemm::kMr));
  }
  const int64_t blocks = (T + tb - 1) / tb;
  parallel_for(blocks, [&](int64_t blk) {
    const int64_t t0 = blk * tb, nt = std::min(T, t0 + tb) - t0;
    Scratch& s = t_scratch;
    if (s.zero.size() < static_cast<size_t>(a.cin)) s.zero.assign(static_cast<size_t>(a.cin), 0.f);
    float* v = aligned(s.vm, static_cast<size_t>(kPos * nt * (a.cin + ldm)));
    float* m = v + kPos * nt * a.cin;
    transform_input(a, t0, nt, v, s.zero.data());
    for (int pos = 0; pos < kPos; ++pos)
      gemm_rows_packed(v + pos * nt * a.cin, a.cin, nt, a.cin, u + pos * per_pos, a.cout, m + pos * nt * ldm, ldm);
    transform_output(a, t0, nt, m, ldm);
  });
}

}  // namespace

bool winograd_takes(int64_t kh, int64_t kw, const Conv2dParams& p, int64_t cin, int64_t tiles) {
  return kh == 3 && kw == 3 && p.stride_h == 1 && p.stride_w == 1 && cin >= 16 && tiles >= kMinTiles;
}

bool winograd_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) {
  Corr a;
  a.n = x.dim(0), a.sh = x.dim(1), a.sw = x.dim(2), a.cin = x.dim(3), a.lds = x.ld(), a.src = x.data();
  a.oh = y.dim(1), a.ow = y.dim(2), a.cout = y.dim(3), a.ldd = y.ld(), a.dst = y.data();
  if (!winograd_takes(w.dim(1), w.dim(2), p, a.cin, a.tiles())) return false;
  a.pt = p.pad_top, a.pl = p.pad_left;
  // g(k, i, j, c) = w[k, i, j, c]
  a.w = w.data(), a.wk = 9 * a.cin, a.wi = 3 * a.cin, a.wj = a.cin, a.wc = 1;
  a.bias = b.defined() ? b.data() : nullptr;
  a.relu = p.relu;
  run(a);
  return true;
}

bool winograd_conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  Corr a;
  a.n = dy.dim(0), a.sh = dy.dim(1), a.sw = dy.dim(2), a.cin = dy.dim(3), a.lds = dy.ld(), a.src = dy.data();
  a.oh = dx.dim(1), a.ow = dx.dim(2), a.cout = dx.dim(3), a.ldd = dx.ld(), a.dst = dx.data();
  if (!winograd_takes(w.dim(1), w.dim(2), p, a.cin, a.tiles())) return false;
  // dx[iy, ix, c] = sum of dy[iy + pt - i, ix + pl - j, o] * w[o, i, j, c]; with i' = 2 - i, a
  // correlation padded by 2 - pt, 2 - pl with g(c, i', j', o) = w[o, 2 - i', 2 - j', c].
  const int64_t C = a.cout;
  a.pt = 2 - p.pad_top, a.pl = 2 - p.pad_left;
  a.w = w.data() + 8 * C, a.wk = 1, a.wi = -3 * C, a.wj = -C, a.wc = 9 * C;
  a.accumulate = accumulate;
  run(a);
  return true;
}

}  // namespace cpu
}  // namespace trick
