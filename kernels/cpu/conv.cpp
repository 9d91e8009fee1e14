// CPU convolution. Forward and dgrad go to the implicit-GEMM engine (sgemm_conv.h) when it
// is selected and takes the case; otherwise, and for wgrad, the OpenBLAS path here: 1x1
// stride-1 convolutions are one GEMM on the NHWC activations as they are; the others go
// through im2col in chunks of output rows (so the column buffer stays a few MB) and a GEMM
// against the (O, KH*KW*C) weight matrix.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/sgemm_conv.h"
#include "kernels/gemm.h"

namespace trick {
namespace cpu {

namespace {

struct Geometry {
  int64_t n, h, w, c;       // input
  int64_t oh, ow, o;        // output
  int64_t kh, kw;           // kernel
  int64_t k;                // kh * kw * c: one im2col row
  int sh, sw, pt, pl;
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && oh == h && ow == w; }
};

Geometry geometry(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p) {
  Geometry g;
  g.n = x[0], g.h = x[1], g.w = x[2], g.c = x[3];
  g.oh = y[1], g.ow = y[2], g.o = y[3];
  g.kh = w[1], g.kw = w[2];
  g.k = g.kh * g.kw * g.c;
  g.sh = p.stride_h, g.sw = p.stride_w, g.pt = p.pad_top, g.pl = p.pad_left;
  return g;
}

// Rows of the im2col matrix per chunk: enough for an efficient GEMM, few enough that the
// buffer (rows x k floats) stays around 8 MB.
int64_t chunk_rows(const Geometry& g) {
  const int64_t total = g.n * g.oh * g.ow;
  const int64_t by_size = std::max<int64_t>(256, (int64_t{2} << 20) / std::max<int64_t>(g.k, 1));
  return std::min(total, by_size);
}

// col[r - r0, (i, j, ch)] = x[n, oh*sh - pt + i, ow*sw - pl + j, ch] (0 outside) for output rows [r0, r1).
void im2col(const Tensor& x, const Geometry& g, int64_t r0, int64_t r1, float* col) {
  const float* xp = x.data();
  const int64_t ld = x.ld();
  parallel_range(r1 - r0, std::max<int64_t>(1, 16384 / std::max<int64_t>(g.k, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = r0 + b; r < r0 + e; ++r) {
      const int64_t n = r / (g.oh * g.ow), rem = r % (g.oh * g.ow);
      const int64_t oy = rem / g.ow, ox = rem % g.ow;
      float* dst = col + (r - r0) * g.k;
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t iy = oy * g.sh - g.pt + i;
        for (int64_t j = 0; j < g.kw; ++j, dst += g.c) {
          const int64_t ix = ox * g.sw - g.pl + j;
          if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
            std::memset(dst, 0, g.c * sizeof(float));
          } else {
            std::memcpy(dst, xp + ((n * g.h + iy) * g.w + ix) * ld, g.c * sizeof(float));
          }
        }
      }
    }
  });
}

// dx[n, iy, ix, :] += sum of the col entries that im2col took from (n, iy, ix), for the
// output rows [r0, r1). A gather over input pixels, so threads never write the same place.
void col2im_accumulate(const float* col, const Geometry& g, int64_t r0, int64_t r1, Tensor& dx) {
  float* dxp = dx.data();
  const int64_t ld = dx.ld();
  const int64_t per_image = g.oh * g.ow;
  const int64_t n0 = r0 / per_image, n1 = (r1 - 1) / per_image;
  parallel_range((n1 - n0 + 1) * g.h, std::max<int64_t>(1, 16384 / std::max<int64_t>(g.w * g.k, 1)),
                 [&](int64_t s0, int64_t s1) {
    for (int64_t row = s0; row < s1; ++row) {
      const int64_t n = n0 + row / g.h, iy = row % g.h;
      for (int64_t ix = 0; ix < g.w; ++ix) {
        float* dst = dxp + ((n * g.h + iy) * g.w + ix) * ld;
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t ty = iy + g.pt - i;
          if (ty < 0 || ty % g.sh) continue;
          const int64_t oy = ty / g.sh;
          if (oy >= g.oh) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t tx = ix + g.pl - j;
            if (tx < 0 || tx % g.sw) continue;
            const int64_t ox = tx / g.sw;
            if (ox >= g.ow) continue;
            const int64_t r = (n * g.oh + oy) * g.ow + ox;
            if (r < r0 || r >= r1) continue;
            const float* src = col + (r - r0) * g.k + (i * g.kw + j) * g.c;
            for (int64_t ch = 0; ch < g.c; ++ch) dst[ch] += src[ch];
          }
        }
      }
    }
  });
}

void zero_rows(Tensor& t) {
  float* p = t.data();
  const int64_t r = t.rows(), c = t.cols(), ld = t.ld();
  parallel_range(r, std::max<int64_t>(1, 65536 / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memset(p + i * ld, 0, c * sizeof(float));
  });
}

// y[r, :] = relu?(y[r, :] + b) for rows [r0, r1) of a row-strided y.
void epilogue(float* y, int64_t ld, int64_t r0, int64_t r1, int64_t o, const float* b, bool relu) {
  if (!b && !relu) return;
  parallel_range(r1 - r0, std::max<int64_t>(1, 32768 / std::max<int64_t>(o, 1)), [&](int64_t s0, int64_t s1) {
    for (int64_t r = r0 + s0; r < r0 + s1; ++r) {
      float* row = y + r * ld;
      if (b)
        for (int64_t j = 0; j < o; ++j) row[j] += b[j];
      if (relu)
        for (int64_t j = 0; j < o; ++j) row[j] = row[j] > 0.f ? row[j] : 0.f;
    }
  });
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) {
  if (packed_conv2d_forward(x, w, b, p, y)) return;
  const Geometry g = geometry(x.shape(), w.shape(), y.shape(), p);
  const int64_t rows = g.n * g.oh * g.ow;
  const float* bias = b.defined() ? b.data() : nullptr;
  if (rows == 0 || g.o == 0) return;
  if (g.pointwise()) {
    cpu::gemm(false, true, rows, g.o, g.c, 1.f, x.data(), x.ld(), w.data(), g.c, 0.f, y.data(), y.ld());
    epilogue(y.data(), y.ld(), 0, rows, g.o, bias, p.relu);
    return;
  }
  const int64_t chunk = chunk_rows(g);
  std::vector<float> col(static_cast<size_t>(chunk * g.k));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    im2col(x, g, r0, r1, col.data());
    cpu::gemm(false, true, r1 - r0, g.o, g.k, 1.f, col.data(), g.k, w.data(), g.k, 0.f, y.data() + r0 * y.ld(),
              y.ld());
    epilogue(y.data(), y.ld(), r0, r1, g.o, bias, p.relu);
  }
}

void conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  if (packed_conv2d_dgrad(dy, w, p, dx, accumulate)) return;
  const Geometry g = geometry(dx.shape(), w.shape(), dy.shape(), p);
  const int64_t rows = g.n * g.oh * g.ow;
  if (g.pointwise()) {
    // dx(rows, C) (+)= dy(rows, O) * w(O, C)
    cpu::gemm(false, false, rows, g.c, g.o, 1.f, dy.data(), dy.ld(), w.data(), g.c, accumulate ? 1.f : 0.f,
              dx.data(), dx.ld());
    return;
  }
  if (!accumulate) zero_rows(dx);
  if (rows == 0) return;
  const int64_t chunk = chunk_rows(g);
  std::vector<float> col(static_cast<size_t>(chunk * g.k));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    // dcol(rows, K) = dy(rows, O) * w(O, K)
    cpu::gemm(false, false, r1 - r0, g.k, g.o, 1.f, dy.data() + r0 * dy.ld(), dy.ld(), w.data(), g.k, 0.f,
              col.data(), g.k);
    col2im_accumulate(col.data(), g, r0, r1, dx);
  }
}

void conv2d_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, Tensor& db,
                  bool accumulate) {
  const Geometry g = geometry(x.shape(), dw.shape(), dy.shape(), p);
  const int64_t rows = g.n * g.oh * g.ow;
  if (db.defined()) {
    // db[o] (+)= sum over rows of dy[r, o]
    float* dbp = db.data();
    if (!accumulate) std::fill(dbp, dbp + g.o, 0.f);
    const float* d = dy.data();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < g.o; ++j) dbp[j] += d[r * dy.ld() + j];
  }
  if (g.pointwise()) {
    // dw(O, C) (+)= dy(rows, O)^T * x(rows, C)
    cpu::gemm(true, false, g.o, g.c, rows, 1.f, dy.data(), dy.ld(), x.data(), x.ld(), accumulate ? 1.f : 0.f,
              dw.data(), g.c);
    return;
  }
  if (!accumulate) std::fill(dw.data(), dw.data() + dw.numel(), 0.f);
  if (rows == 0) return;
  const int64_t chunk = chunk_rows(g);
  std::vector<float> col(static_cast<size_t>(chunk * g.k));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    im2col(x, g, r0, r1, col.data());
    // dw(O, K) += dy(chunk, O)^T * col(chunk, K)
    cpu::gemm(true, false, g.o, g.k, r1 - r0, 1.f, dy.data() + r0 * dy.ld(), dy.ld(), col.data(), g.k, 1.f,
              dw.data(), g.k);
  }
}

}  // namespace cpu
}  // namespace trick
