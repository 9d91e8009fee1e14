// CPU pooling, NHWC. Every loop has the channels innermost (contiguous, vectorised).
// Forward passes and the average-pool gradient (a gather: each input pixel sums the output
// gradients of the windows that cover it) run in parallel over rows. The max-pool gradient
// is a scatter to each window's first maximum; it runs over bands of output rows sized so
// that two bands of the same parity never touch the same input row: the even bands in
// parallel, then the odd ones.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/pool.h"

namespace trick {
namespace cpu {

namespace {

struct Window {
  int64_t y0, y1, x0, x1;  // clipped to the image
  int64_t area;            // divisor for average pooling
};

Window window(const Pool2dParams& p, int64_t h, int64_t w, int64_t oy, int64_t ox) {
  Window win;
  const int64_t ys = oy * p.stride_h - p.pad_top, xs = ox * p.stride_w - p.pad_left;
  const int64_t ye = std::min<int64_t>(ys + p.kernel_h, h + p.pad_bottom);
  const int64_t xe = std::min<int64_t>(xs + p.kernel_w, w + p.pad_right);
  const int64_t padded_area = (ye - ys) * (xe - xs);
  win.y0 = std::max<int64_t>(ys, 0), win.x0 = std::max<int64_t>(xs, 0);
  win.y1 = std::min<int64_t>(ye, h), win.x1 = std::min<int64_t>(xe, w);
  win.area = p.count_include_pad ? padded_area : (win.y1 - win.y0) * (win.x1 - win.x0);
  return win;
}

// Rows per parallel block for rows of `cols` floats.
int64_t grain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)); }

void zero_rows(Tensor& t) {
  const int64_t r = t.rows(), c = t.cols(), ld = t.ld();
  float* d = t.data();
  parallel_range(r, grain(c) * 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memset(d + i * ld, 0, static_cast<size_t>(c) * sizeof(float));
  });
}

// f(b, oy) for every image b < n and output row oy < oh, in parallel.
template <typename F>
void each_output_row(int64_t n, int64_t oh, int64_t row_floats, F f) {
  parallel_range(n * oh, grain(row_floats), [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) f(i / oh, i % oh);
  });
}

// d[ch] += g[ch] where v[ch] is the window's maximum m[ch] (NaN matching NaN) and no earlier
// position took it (done[ch]). Branch-free, so it vectorises.
void scatter_to_max(const float* __restrict v, const float* __restrict m, const float* __restrict g, int64_t c,
                    int32_t* __restrict done, float* __restrict d) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const int32_t same = static_cast<int32_t>(v[ch] == m[ch]) | (static_cast<int32_t>(v[ch] != v[ch]) &
                                                                 static_cast<int32_t>(m[ch] != m[ch]));
    const int32_t hit = same & (done[ch] ^ 1);
    d[ch] += hit ? g[ch] : 0.f;
    done[ch] |= hit;
  }
}

}  // namespace

void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1), ow = y.dim(2);
  const int64_t xld = x.ld(), yld = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
  each_output_row(n, oh, ow * c * p.kernel_h * p.kernel_w, [&](int64_t b, int64_t oy) {
    for (int64_t ox = 0; ox < ow; ++ox) {
      const Window win = window(p, h, w, oy, ox);
      float* out = yp + ((b * oh + oy) * ow + ox) * yld;
      for (int64_t ch = 0; ch < c; ++ch) out[ch] = -std::numeric_limits<float>::infinity();
      for (int64_t iy = win.y0; iy < win.y1; ++iy)
        for (int64_t ix = win.x0; ix < win.x1; ++ix) {
          const float* in = xp + ((b * h + iy) * w + ix) * xld;
          for (int64_t ch = 0; ch < c; ++ch) out[ch] = (in[ch] > out[ch] || in[ch] != in[ch]) ? in[ch] : out[ch];
        }
    }
  });
}

void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1), ow = y.dim(2);
  if (!accumulate) zero_rows(dx);
  if (n * oh * ow == 0 || c == 0) return;
  const int64_t xld = x.ld(), yld = y.ld(), dyld = dy.ld(), dxld = dx.ld();
  const float *xp = x.data(), *yp = y.data(), *dyp = dy.data();
  float* dxp = dx.data();
  // Output rows [a, a + L) read input rows [a*s - pt, (a + L - 1)*s - pt + kh); the band two
  // further on starts at input row (a + 2L)*s - pt, past the end when kh <= (L + 1) * s.
  const int64_t s = p.stride_h;
  const int64_t min_rows = std::max<int64_t>(1, (p.kernel_h + s - 1) / s - 1);
  const int64_t rows = std::max(min_rows, (oh + 15) / 16);
  const int64_t bands = (oh + rows - 1) / rows;
  auto band = [&](int64_t b, int64_t k) {
    // done[ch]: the gradient of this window and channel has gone to an earlier position.
    std::vector<int32_t> done(static_cast<size_t>(c));
    for (int64_t oy = k * rows; oy < std::min(oh, (k + 1) * rows); ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Window win = window(p, h, w, oy, ox);
        const int64_t r = (b * oh + oy) * ow + ox;
        std::fill(done.begin(), done.end(), 0);
        // The first position holding the maximum, in row-major window order (PyTorch's choice).
        for (int64_t iy = win.y0; iy < win.y1; ++iy)
          for (int64_t ix = win.x0; ix < win.x1; ++ix) {
            const int64_t i = (b * h + iy) * w + ix;
            scatter_to_max(xp + i * xld, yp + r * yld, dyp + r * dyld, c, done.data(), dxp + i * dxld);
          }
      }
  };
  for (int64_t parity = 0; parity < 2; ++parity) {
    const int64_t per_image = (bands - parity + 1) / 2;  // bands parity, parity + 2, ...
    parallel_for(n * per_image, [&](int64_t i) { band(i / per_image, parity + 2 * (i % per_image)); });
  }
}

void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1), ow = y.dim(2);
  const int64_t xld = x.ld(), yld = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
  each_output_row(n, oh, ow * c * p.kernel_h * p.kernel_w, [&](int64_t b, int64_t oy) {
    for (int64_t ox = 0; ox < ow; ++ox) {
      const Window win = window(p, h, w, oy, ox);
      float* out = yp + ((b * oh + oy) * ow + ox) * yld;
      for (int64_t ch = 0; ch < c; ++ch) out[ch] = 0.f;
      for (int64_t iy = win.y0; iy < win.y1; ++iy)
        for (int64_t ix = win.x0; ix < win.x1; ++ix) {
          const float* in = xp + ((b * h + iy) * w + ix) * xld;
          for (int64_t ch = 0; ch < c; ++ch) out[ch] += in[ch];
        }
      const float inv = win.area > 0 ? 1.f / static_cast<float>(win.area) : 0.f;
      for (int64_t ch = 0; ch < c; ++ch) out[ch] *= inv;
    }
  });
}

void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate) {
  const int64_t n = dx.dim(0), h = dx.dim(1), w = dx.dim(2), c = dx.dim(3), oh = dy.dim(1), ow = dy.dim(2);
  const int64_t dyld = dy.ld(), dxld = dx.ld();
  const float* dyp = dy.data();
  float* dxp = dx.data();
  const int64_t sh = p.stride_h, sw = p.stride_w;
  // Output rows whose window covers input row i: oy*s - pt <= i < oy*s - pt + k.
  auto first = [](int64_t i, int64_t pad, int64_t k, int64_t s) {
    const int64_t t = i + pad - k + 1;
    return t <= 0 ? 0 : (t + s - 1) / s;
  };
  each_output_row(n, h, w * c * p.kernel_h * p.kernel_w, [&](int64_t b, int64_t iy) {
    const int64_t oy0 = first(iy, p.pad_top, p.kernel_h, sh), oy1 = std::min(oh - 1, (iy + p.pad_top) / sh);
    for (int64_t ix = 0; ix < w; ++ix) {
      const int64_t ox0 = first(ix, p.pad_left, p.kernel_w, sw), ox1 = std::min(ow - 1, (ix + p.pad_left) / sw);
      float* d = dxp + ((b * h + iy) * w + ix) * dxld;
      if (!accumulate)
        for (int64_t ch = 0; ch < c; ++ch) d[ch] = 0.f;
      for (int64_t oy = oy0; oy <= oy1; ++oy)
        for (int64_t ox = ox0; ox <= ox1; ++ox) {
          const Window win = window(p, h, w, oy, ox);
          const float inv = win.area > 0 ? 1.f / static_cast<float>(win.area) : 0.f;
          const float* g = dyp + ((b * oh + oy) * ow + ox) * dyld;
          for (int64_t ch = 0; ch < c; ++ch) d[ch] += g[ch] * inv;
        }
    }
  });
}

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  const int64_t n = x.dim(0), hw = x.dim(1) * x.dim(2), c = x.dim(3), xld = x.ld(), yld = y.ld();
  const float inv = hw ? 1.f / static_cast<float>(hw) : 0.f;
  parallel_range(n, std::max<int64_t>(1, 65536 / std::max<int64_t>(hw * c, 1)), [&](int64_t b0, int64_t b1) {
    std::vector<double> acc(static_cast<size_t>(c));
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t i = 0; i < hw; ++i) {
        const float* in = x.data() + (b * hw + i) * xld;
        for (int64_t ch = 0; ch < c; ++ch) acc[ch] += in[ch];
      }
      float* out = y.data() + b * yld;
      for (int64_t ch = 0; ch < c; ++ch) out[ch] = static_cast<float>(acc[ch]) * inv;
    }
  });
}

void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t n = dx.dim(0), hw = dx.dim(1) * dx.dim(2), c = dx.dim(3), dxld = dx.ld(), dyld = dy.ld();
  const float inv = hw ? 1.f / static_cast<float>(hw) : 0.f;
  parallel_range(n * hw, grain(c) * 4, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const float* g = dy.data() + (i / hw) * dyld;
      float* d = dx.data() + i * dxld;
      if (accumulate)
        for (int64_t ch = 0; ch < c; ++ch) d[ch] += g[ch] * inv;
      else
        for (int64_t ch = 0; ch < c; ++ch) d[ch] = g[ch] * inv;
    }
  });
}

}  // namespace cpu
}  // namespace trick
