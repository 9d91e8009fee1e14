// Implicit-GEMM convolution driver (see sgemm_conv.h).
//
// One convolution is one or more Problems. A Problem is a GEMM C(M, N) = A(M, K) * B(K, N):
//   M: output pixels on a grid (nimg, U, V), each mapped to a row of the destination tensor
//      (for a forward: every output pixel; for a stride phase of dgrad: every s-th input pixel);
//   K: taps x cin, where tap t reads source pixel (u * step_h + oy_t, v * step_w + ox_t) of an
//      NHWC source (zeros outside it) and cin channels of it;
//   B: from the (O, KH, KW, C) weights, B(t, kk, n) = w[n * wn + kk * wk + woff_t].
//
// Blocking (BLIS's, with A unpacked): B is packed once per call into panels of 16 columns x
// all K; then for each block of <= kMc output pixels, for each K chunk (<= kKc, so a
// 16-column piece of B is 16 KB and stays in L1 while the block's tiles go by), for each
// panel, for each 6-pixel tile: one micro-kernel call. The pool's threads (parallel.h) claim
// panel groups to pack, then (pixel block, panel group) items to compute.
#include "kernels/cpu/sgemm_conv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/prepared.h"
#include "kernels/cpu/sgemm_kernel.h"
#include "kernels/gemm.h"

namespace trick {
namespace cpu {

using sgemm::kMr;
using sgemm::kNr;
using sgemm::Segment;

namespace {

// Measured on the Inception layers (single thread, Zen): kKc 128..512 and kMc 48..192 were
// within the machine's noise of each other; 128 was 5% slower.
constexpr int64_t kKc = 256;       // K per chunk
constexpr int64_t kMc = 16 * kMr;  // output pixels per block (96)
constexpr int64_t kMcOne = 320;    // up to this many output pixels: one block
constexpr int64_t kPanelsPerChunk = 8;
constexpr int64_t kMinCin = 16;  // below this, taps are merged by an explicit im2col

alignas(64) const float kZeros[kKc] = {};

struct Tap {
  int64_t oy, ox;  // source pixel offset
  int64_t woff;    // offset of the tap in the weights
};

struct Problem {
  // Output grid: images, rows, columns; (b, u, v) goes to destination row
  // (b * dh + u * dsu + dou) * dw + v * dsv + dov.
  int64_t nimg = 0, u = 0, v = 0;
  float* dst = nullptr;
  int64_t ldd = 0, dh = 0, dw = 0, dsu = 1, dou = 0, dsv = 1, dov = 0;
  int64_t n = 0;  // columns of C
  // Source: (nimg, sh, sw, cin) with row stride lds.
  const float* src = nullptr;
  int64_t lds = 0, sh = 0, sw = 0, step_h = 1, step_w = 1, cin = 0;
  std::vector<Tap> taps;
  // Weights; wt, when set, is the tensor w points into, and its packed panels may be kept
  // across calls (prepared.h).
  const float* w = nullptr;
  int64_t wn = 0, wk = 0;
  const Tensor* wt = nullptr;
  const float* bias = nullptr;
  bool relu = false, accumulate = false;

  int64_t m() const { return nimg * u * v; }
  int64_t k() const { return static_cast<int64_t>(taps.size()) * cin; }
};

// Scratch memory kept between calls: the packed weights belong to the calling thread, the
// per-block tables to whichever pool thread runs the block.
struct Scratch {
  std::vector<float> packed;  // grows to the largest B seen
  std::vector<Segment> segs;
  std::vector<int> nseg;     // per tile
  std::vector<float> chunk;  // one K chunk of a block's panels, when packed per block
  float* chunk_b = nullptr;  // its 64-byte aligned start
  std::vector<const float*> src_row;  // per block pixel: its image's source pixel (0, 0), or null
  std::vector<int64_t> sy, sx;
  std::vector<float*> dst_row;
  std::vector<float> col;  // the explicit im2col's columns (few channels), the calling thread's
};
thread_local Scratch t_scratch;

// Rows [k0, k1) of B panels [p0, p1) (columns [p0 * kNr, p1 * kNr)), zero past column n:
// panel p's row k goes to out + (p - p0) * stride + (k - k0) * kNr.
void pack_range(const Problem& P, int64_t p0, int64_t p1, int64_t k0, int64_t k1, float* out, int64_t stride) {
  const int64_t cin = P.cin, t0 = k0 / cin, t1 = std::min<int64_t>(P.taps.size(), (k1 + cin - 1) / cin);
  if (P.wn == 1) {
    // dgrad: a B row is kNr consecutive weights of w[o, i, j, :]. Walk the weights in memory
    // order (o, tap) and deal each row's run to the panels.
    const int last_cols = static_cast<int>(std::min<int64_t>(kNr, P.n - (p1 - 1) * kNr));
    for (int64_t kk = 0; kk < cin; ++kk)
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row = t * cin + kk;
        if (row < k0 || row >= k1) continue;
        const float* src = P.w + kk * P.wk + P.taps[t].woff + p0 * kNr;
        if (kk + 2 < cin) _mm_prefetch(reinterpret_cast<const char*>(src + 2 * P.wk), _MM_HINT_T0);
        sgemm::pack_b_deal(src, p1 - p0, last_cols, out + (row - k0) * kNr, stride);
      }
    return;
  }
  // forward (wk == 1): a B column is a run of one output channel's weights.
  for (int64_t p = p0; p < p1; ++p) {
    const int cols = static_cast<int>(std::min<int64_t>(kNr, P.n - p * kNr));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t a = std::max(k0, t * cin) - t * cin, e = std::min(k1, (t + 1) * cin) - t * cin;
      const float* wt = P.w + P.taps[t].woff + p * kNr * P.wn + a;
      const float* rows[kNr];
      for (int q = 0; q < kNr; ++q) rows[q] = wt + std::min(q, cols - 1) * P.wn;
      sgemm::pack_b_transpose(rows, cols, e - a, out + (p - p0) * stride + (t * cin + a - k0) * kNr);
    }
  }
}

// dst rows of the grid pixels [m0, m1) set to zero (a stride phase that no tap reaches).
void zero_pixels(const Problem& P, int64_t m0, int64_t m1) {
  const int64_t per_img = P.u * P.v;
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t b = m / per_img, r = m % per_img, u = r / P.v, v = r % P.v;
    float* d = P.dst + ((b * P.dh + u * P.dsu + P.dou) * P.dw + v * P.dsv + P.dov) * P.ldd;
    std::memset(d, 0, static_cast<size_t>(P.n) * sizeof(float));
  }
}

// Output pixels [m0, m1) x panels [p0, p1) of P, from the packed B (all panels, all K), or,
// when `packed` is null, packing each K chunk of these panels here (into L2-sized scratch).
void compute_block(const Problem& P, const float* packed, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int64_t K = P.k();
  const int64_t nchunks = (K + kKc - 1) / kKc;
  const int64_t chunk = (K + nchunks - 1) / nchunks;
  const int64_t ntaps = static_cast<int64_t>(P.taps.size());
  const int64_t max_segs = std::min<int64_t>(ntaps, (chunk + P.cin - 1) / P.cin + 1);
  const int64_t npix = m1 - m0, ntiles = (npix + kMr - 1) / kMr;
  Scratch& s = t_scratch;
  s.segs.resize(static_cast<size_t>(ntiles * max_segs));
  s.nseg.resize(static_cast<size_t>(ntiles));
  if (!packed) s.chunk_b = sgemm::aligned_floats(s.chunk, static_cast<size_t>((p1 - p0) * chunk * kNr));
  s.src_row.resize(ntiles * kMr), s.sy.resize(ntiles * kMr), s.sx.resize(ntiles * kMr);
  s.dst_row.resize(ntiles * kMr);
  const int64_t per_img = P.u * P.v;
  for (int64_t i = 0; i < npix; ++i) {
    const int64_t m = m0 + i, b = m / per_img, r = m % per_img, u = r / P.v, v = r % P.v;
    s.src_row[i] = P.src + b * P.sh * P.sw * P.lds;
    s.sy[i] = u * P.step_h, s.sx[i] = v * P.step_w;
    s.dst_row[i] = P.dst + ((b * P.dh + u * P.dsu + P.dou) * P.dw + v * P.dsv + P.dov) * P.ldd;
  }
  for (int64_t i = npix; i < ntiles * kMr; ++i) s.src_row[i] = nullptr, s.dst_row[i] = nullptr;
  const int base_flags = P.accumulate ? sgemm::kLoadC : 0;
  const int last_flags = sgemm::kEpilogue | (P.relu ? sgemm::kRelu : 0);

  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t k0 = c * chunk, k1 = std::min(K, k0 + chunk);
    // The segments of every tile of the block for K range [k0, k1): one per tap, left out
    // where all the tile's rows fall in the padding (a sixth of the 3x3 work at 8x8).
    std::fill(s.nseg.begin(), s.nseg.end(), 0);
    for (int64_t t = k0 / P.cin; t < ntaps && t * P.cin < k1; ++t) {
      const int64_t a = std::max(k0, t * P.cin) - t * P.cin, e = std::min(k1, (t + 1) * P.cin) - t * P.cin;
      const Tap& tap = P.taps[t];
      for (int64_t tile = 0; tile < ntiles; ++tile) {
        Segment& sg = s.segs[tile * max_segs + s.nseg[tile]];
        bool any = false;
        for (int r = 0; r < kMr; ++r) {
          const int64_t i = tile * kMr + r;
          const int64_t y = s.sy[i] + tap.oy, x = s.sx[i] + tap.ox;
          const bool inside = s.src_row[i] && y >= 0 && y < P.sh && x >= 0 && x < P.sw;
          sg.a[r] = inside ? s.src_row[i] + (y * P.sw + x) * P.lds + a : kZeros;
          any = any || inside;
        }
        if (!any) continue;
        sg.len = e - a;
        sg.boff = (t * P.cin + a - k0) * kNr;
        ++s.nseg[tile];
      }
    }
    int flags = c == 0 ? base_flags : sgemm::kLoadC;
    if (c == nchunks - 1) flags |= last_flags;
    if (!packed) pack_range(P, p0, p1, k0, k1, s.chunk_b, (k1 - k0) * kNr);
    for (int64_t p = p0; p < p1; ++p) {
      const float* bp = packed ? packed + (p * K + k0) * kNr : s.chunk_b + (p - p0) * (k1 - k0) * kNr;
      const int cols = static_cast<int>(std::min<int64_t>(kNr, P.n - p * kNr));
      for (int64_t tile = 0; tile < ntiles; ++tile) {
        const int rows = static_cast<int>(std::min<int64_t>(kMr, npix - tile * kMr));
        sgemm::kernel_6x16(&s.segs[tile * max_segs], s.nseg[tile], bp, &s.dst_row[tile * kMr], p * kNr, rows, cols,
                           flags, P.bias);
      }
    }
  }
}

// Runs f(i) for i < n on the pool, or inline when the whole work is small.
void maybe_parallel(int64_t n, bool small, const std::function<void(int64_t)>& f) {
  if (small) {
    for (int64_t i = 0; i < n; ++i) f(i);
  } else {
    parallel_for(n, f);
  }
}

// Runs one problem on the CPU threads: packs B (items: panel groups), then computes C
// (items: pixel blocks x panel groups, claimed dynamically).
void run(const Problem& P) {
  const int64_t M = P.m(), K = P.k(), panels = (P.n + kNr - 1) / kNr;
  if (M == 0 || panels == 0) return;
  const int64_t threads = num_threads();
  const bool small = threads <= 1 || 2.0 * static_cast<double>(M) * P.n * K < 4e6;
  if (K == 0) {  // no tap reaches these pixels (a stride phase of dgrad): dx = 0, or unchanged
    if (!P.accumulate)
      maybe_parallel(threads, small, [&](int64_t t) { zero_pixels(P, M * t / threads, M * (t + 1) / threads); });
    return;
  }
  // Pixel blocks of equal size (a multiple of kMr, at most kMc); enough panel groups that
  // there are about 4 items per thread, so a thread the OS preempts holds back little.
  // Up to kMcOne pixels (17x17 and smaller) form one block: then every item packs its own
  // panels chunk by chunk, which stay in L2, instead of all of B going out to L3 and back.
  const int64_t mblocks = M <= kMcOne ? 1 : (M + kMc - 1) / kMc;
  const int64_t mb = ((M + mblocks - 1) / mblocks + kMr - 1) / kMr * kMr;
  const int64_t want = small ? 1 : 4 * threads;
  // One block packs its panels' chunks itself: at most kPanelsPerChunk of them, so that the
  // chunk (<= 128 KB) stays in L2 beside the block's pixels.
  const int64_t min_groups = mblocks == 1 ? (panels + kPanelsPerChunk - 1) / kPanelsPerChunk : 1;
  const int64_t groups = std::min(panels, std::max(min_groups, (want + mblocks - 1) / mblocks));
  const int64_t pg = (panels + groups - 1) / groups;
  const int64_t ngroups = (panels + pg - 1) / pg;

  // All of B packed: kept from an earlier call while the weights are frozen, or packed now
  // when there are several pixel blocks to share it.
  const auto pack_all = [&](float* out) {
    const int64_t pack_items = small ? 1 : std::min(panels, 4 * threads);
    maybe_parallel(pack_items, small, [&](int64_t i) {
      const int64_t p0 = panels * i / pack_items, p1 = panels * (i + 1) / pack_items;
      if (p0 < p1) pack_range(P, p0, p1, 0, K, out + p0 * K * kNr, K * kNr);
    });
  };
  std::shared_ptr<const float> kept;
  if (P.wt && FrozenConvWeights::open()) {
    thread_local std::vector<int64_t> layout;  // reused: no allocation per call
    layout.assign({0, P.w - P.wt->data(), P.wn, P.wk, P.n, P.cin});
    for (const Tap& t : P.taps) layout.push_back(t.woff);
    kept = prepared_weights(*P.wt, layout, static_cast<size_t>(panels * K * kNr), pack_all);
  }
  const float* packed = kept.get();
  if (!packed && mblocks > 1) {
    float* out = sgemm::aligned_floats(t_scratch.packed, static_cast<size_t>(panels * K * kNr));
    pack_all(out);
    packed = out;
  }
  maybe_parallel(mblocks * ngroups, small, [&](int64_t i) {
    const int64_t b = i / ngroups, g = i % ngroups;
    const int64_t m0 = std::min(M, b * mb), m1 = std::min(M, m0 + mb);
    if (m0 < m1) compute_block(P, packed, m0, m1, g * pg, std::min(panels, (g + 1) * pg));
  });
}

// col[r, (i, j, ch)] = x[pixel r's window (i, j), ch] for output pixels [r0, r1), zeros outside.
void im2col(const Tensor& x, const Conv2dParams& p, int64_t kh, int64_t kw, int64_t oh, int64_t ow, int64_t r0,
            int64_t r1, float* col) {
  const int64_t h = x.dim(1), w = x.dim(2), c = x.dim(3), ld = x.ld(), k = kh * kw * c;
  const float* xp = x.data();
  parallel_range(r1 - r0, std::max<int64_t>(1, 16384 / k), [&](int64_t b, int64_t e) {
    for (int64_t r = r0 + b; r < r0 + e; ++r) {
      const int64_t n = r / (oh * ow), rem = r % (oh * ow), oy = rem / ow, ox = rem % ow;
      float* d = col + (r - r0) * k;
      for (int64_t i = 0; i < kh; ++i) {
        const int64_t iy = oy * p.stride_h - p.pad_top + i;
        for (int64_t j = 0; j < kw; ++j, d += c) {
          const int64_t ix = ox * p.stride_w - p.pad_left + j;
          // Plain loops: c is below kMinCin here, too short for memcpy's call to pay.
          const float* src = xp + ((n * h + iy) * w + ix) * ld;
          if (iy < 0 || iy >= h || ix < 0 || ix >= w)
            for (int64_t ch = 0; ch < c; ++ch) d[ch] = 0.f;
          else
            for (int64_t ch = 0; ch < c; ++ch) d[ch] = src[ch];
        }
      }
    }
  });
}

// dx (+)= col2im(dy * w) for few input channels (the 3-channel first layer), where the phases
// below would leave most of each 16-column panel empty: dcol(rows, KH*KW*C) = dy(rows, O) *
// w(O, KH*KW*C) in chunks of output pixels, then each input pixel gathers its entries.
void dgrad_by_columns(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  const int64_t n = dx.dim(0), h = dx.dim(1), wd = dx.dim(2), c = dx.dim(3);
  const int64_t o = w.dim(0), kh = w.dim(1), kw = w.dim(2), oh = dy.dim(1), ow = dy.dim(2);
  const int64_t k = kh * kw * c, rows = n * oh * ow, ldx = dx.ld();
  float* dxp = dx.data();
  if (!accumulate)
    parallel_range(n * h * wd, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) std::memset(dxp + i * ldx, 0, static_cast<size_t>(c) * sizeof(float));
    });
  if (rows == 0 || o == 0) return;
  const int64_t chunk = std::min(rows, std::max<int64_t>(kMc, (int64_t{1} << 20) / k));
  float* col = sgemm::aligned_floats(t_scratch.col, static_cast<size_t>(chunk * k));
  Problem P;
  P.n = k, P.cin = o, P.taps.push_back({0, 0, 0});
  P.w = w.data(), P.wt = &w, P.wn = 1, P.wk = k;
  P.dst = col, P.ldd = k, P.lds = dy.ld();
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    P.nimg = 1, P.u = 1, P.v = r1 - r0, P.sh = 1, P.sw = r1 - r0, P.dh = 1, P.dw = r1 - r0;
    P.src = dy.data() + r0 * dy.ld();
    run(P);
    // dx[b, iy, ix, :] += col[r, (i, j, :)] over the output pixels r in [r0, r1) whose window
    // (i, j) is (iy, ix). A gather over input rows: no two threads write the same pixel. Only
    // the taps of the pixel's stride phase are visited: i = (iy + pt) mod sh, then every sh-th.
    const int64_t b0 = r0 / (oh * ow), b1 = (r1 - 1) / (oh * ow);
    const int64_t sh = p.stride_h, sw = p.stride_w;
    parallel_range((b1 - b0 + 1) * h, 4, [&](int64_t s0, int64_t s1) {
      for (int64_t row = s0; row < s1; ++row) {
        const int64_t b = b0 + row / h, iy = row % h;
        for (int64_t i = (iy + p.pad_top) % sh; i < kh; i += sh) {
          const int64_t ty = iy + p.pad_top - i;
          if (ty < 0 || ty / sh >= oh) continue;
          const int64_t rbase = (b * oh + ty / sh) * ow;
          for (int64_t ix = 0; ix < wd; ++ix) {
            float* d = dxp + ((b * h + iy) * wd + ix) * ldx;
            for (int64_t j = (ix + p.pad_left) % sw; j < kw; j += sw) {
              const int64_t tx = ix + p.pad_left - j;
              if (tx < 0 || tx / sw >= ow) continue;
              const int64_t r = rbase + tx / sw;
              if (r < r0 || r >= r1) continue;
              const float* s = col + (r - r0) * k + (i * kw + j) * c;
              for (int64_t ch = 0; ch < c; ++ch) d[ch] += s[ch];
            }
          }
        }
      }
    });
  }
}

ConvEngine initial_engine() {
  ConvEngine e = ConvEngine::Winograd;
  const char* env = std::getenv("TRICK_CPU_CONV");
  if (env && *env && !parse_conv_engine(env, &e))
    std::fprintf(stderr, "note: TRICK_CPU_CONV=%s is not winograd, winograd4, packed or blas; using winograd\n", env);
  return e != ConvEngine::Blas && !sgemm::kernel_supported() ? ConvEngine::Blas : e;
}

ConvEngine& engine_setting() {
  static ConvEngine e = initial_engine();
  return e;
}

bool implicit_gemm() { return conv_engine() != ConvEngine::Blas; }
bool winograd() { return has_winograd(conv_engine()); }

}  // namespace

void set_conv_engine(ConvEngine e) {
  engine_setting() = (e != ConvEngine::Blas && !sgemm::kernel_supported()) ? ConvEngine::Blas : e;
}
ConvEngine conv_engine() { return engine_setting(); }
const char* conv_engine_name() {
  switch (conv_engine()) {
    case ConvEngine::Winograd: return "packed-avx2+winograd";
    case ConvEngine::Winograd4: return "packed-avx2+winograd4";
    case ConvEngine::Packed: return "packed-avx2";
    case ConvEngine::Blas: break;
  }
  return "openblas";
}

const char* conv_engine_key(ConvEngine e) {
  switch (e) {
    case ConvEngine::Winograd: return "winograd";
    case ConvEngine::Winograd4: return "winograd4";
    case ConvEngine::Packed: return "packed";
    case ConvEngine::Blas: break;
  }
  return "blas";
}

bool parse_conv_engine(const std::string& s, ConvEngine* e) {
  for (ConvEngine c : {ConvEngine::Winograd, ConvEngine::Winograd4, ConvEngine::Packed, ConvEngine::Blas})
    if (s == conv_engine_key(c)) {
      *e = c;
      return true;
    }
  return false;
}

void gemm_rows_packed(const float* a, int64_t lda, int64_t rows, int64_t k, const float* packed, int64_t n, float* c,
                      int64_t ldc) {
  if (rows <= 0 || n <= 0) return;
  thread_local Problem P;
  P.nimg = 1, P.u = 1, P.v = rows;
  P.dst = c, P.ldd = ldc, P.dh = 1, P.dw = rows;
  P.n = n;
  P.src = a, P.lds = lda, P.sh = 1, P.sw = rows, P.cin = k;
  if (P.taps.empty()) P.taps.push_back({0, 0, 0});
  compute_block(P, packed, 0, rows, 0, (n + kNr - 1) / kNr);
}

bool packed_conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) {
  if (!implicit_gemm()) return false;
  if (winograd() && winograd_conv2d_forward(x, w, b, p, y)) return true;
  const int64_t n = x.dim(0), h = x.dim(1), wd = x.dim(2), c = x.dim(3);
  const int64_t o = w.dim(0), kh = w.dim(1), kw = w.dim(2);
  const int64_t oh = y.dim(1), ow = y.dim(2);
  if (n * oh * ow == 0 || o == 0) return true;
  Problem P;
  P.n = o;
  P.w = w.data(), P.wt = &w;
  P.bias = b.defined() ? b.data() : nullptr;
  P.relu = p.relu;
  P.ldd = y.ld();
  if (c >= kMinCin || kh * kw == 1) {
    P.nimg = n, P.u = oh, P.v = ow;
    P.dst = y.data(), P.dh = oh, P.dw = ow;
    P.src = x.data(), P.lds = x.ld(), P.sh = h, P.sw = wd, P.step_h = p.stride_h, P.step_w = p.stride_w, P.cin = c;
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) P.taps.push_back({i - p.pad_top, j - p.pad_left, (i * kw + j) * c});
    P.wn = kh * kw * c, P.wk = 1;
    run(P);
    return true;
  }
  // Few channels (the 3-channel first layer): merge the taps by an explicit im2col, in chunks
  // of output pixels that keep the buffer near 4 MB, and run each chunk as a 1x1 problem.
  const int64_t k = kh * kw * c, rows = n * oh * ow;
  const int64_t chunk = std::min(rows, std::max<int64_t>(kMc, (int64_t{1} << 20) / k));
  float* col = sgemm::aligned_floats(t_scratch.col, static_cast<size_t>(chunk * k));
  P.taps.push_back({0, 0, 0});
  P.wn = k, P.wk = 1, P.cin = k, P.lds = k, P.src = col;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    im2col(x, p, kh, kw, oh, ow, r0, r1, col);
    P.nimg = 1, P.u = 1, P.v = r1 - r0;
    P.sh = 1, P.sw = r1 - r0;
    P.dst = y.data() + r0 * y.ld(), P.dh = 1, P.dw = r1 - r0;
    run(P);
  }
  return true;
}

bool packed_conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  if (!implicit_gemm()) return false;
  if (winograd() && winograd_conv2d_dgrad(dy, w, p, dx, accumulate)) return true;
  const int64_t n = dx.dim(0), h = dx.dim(1), wd = dx.dim(2), c = dx.dim(3);
  const int64_t o = w.dim(0), kh = w.dim(1), kw = w.dim(2);
  const int64_t oh = dy.dim(1), ow = dy.dim(2);
  if (n * h * wd == 0) return true;
  if (c < kMinCin) {
    dgrad_by_columns(dy, w, p, dx, accumulate);
    return true;
  }
  // dx[iy, ix] = sum over taps (i, j) and o of dy[(iy + pt - i) / sh, (ix + pl - j) / sw, o] * w[o, i, j, :]
  // where the divisions are exact. Pixels of one stride phase (iy % sh, ix % sw) share their
  // taps: one problem per phase, whose source offsets are plain shifts of dy.
  std::vector<Problem> problems;
  for (int64_t py = 0; py < p.stride_h && py < h; ++py)
    for (int64_t px = 0; px < p.stride_w && px < wd; ++px) {
      Problem P;
      P.nimg = n, P.u = (h - py + p.stride_h - 1) / p.stride_h, P.v = (wd - px + p.stride_w - 1) / p.stride_w;
      P.dst = dx.data(), P.ldd = dx.ld(), P.dh = h, P.dw = wd;
      P.dsu = p.stride_h, P.dou = py, P.dsv = p.stride_w, P.dov = px;
      P.n = c;
      P.src = dy.data(), P.lds = dy.ld(), P.sh = oh, P.sw = ow, P.cin = o;
      P.w = w.data(), P.wt = &w, P.wn = 1, P.wk = kh * kw * c;
      P.accumulate = accumulate;
      for (int64_t i = 0; i < kh; ++i) {
        const int64_t ty = py + p.pad_top - i;
        if (((ty % p.stride_h) + p.stride_h) % p.stride_h) continue;
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t tx = px + p.pad_left - j;
          if (((tx % p.stride_w) + p.stride_w) % p.stride_w) continue;
          P.taps.push_back({ty / p.stride_h, tx / p.stride_w, (i * kw + j) * c});
        }
      }
      problems.push_back(std::move(P));
    }
  for (const Problem& P : problems) run(P);
  return true;
}

}  // namespace cpu
}  // namespace trick
