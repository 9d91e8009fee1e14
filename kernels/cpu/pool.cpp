// CPU pooling, NHWC. Loops run over output pixels with the channels innermost (contiguous);
// backward passes scatter into dx per image and channel block, so threads never collide.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

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

void zero_rows(Tensor& t) {
  const int64_t r = t.rows(), c = t.cols(), ld = t.ld();
  float* d = t.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < r; ++i) std::memset(d + i * ld, 0, c * sizeof(float));
}

constexpr int64_t kChannelBlock = 32;

}  // namespace

void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1), ow = y.dim(2);
  const int64_t xld = x.ld(), yld = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
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
}

void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1), ow = y.dim(2);
  if (!accumulate) zero_rows(dx);
  const int64_t xld = x.ld(), yld = y.ld(), dyld = dy.ld(), dxld = dx.ld();
  const float *xp = x.data(), *yp = y.data(), *dyp = dy.data();
  float* dxp = dx.data();
  const int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t cb = 0; cb < blocks; ++cb) {
      const int64_t c0 = cb * kChannelBlock, c1 = std::min(c, c0 + kChannelBlock);
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const Window win = window(p, h, w, oy, ox);
          const int64_t r = (b * oh + oy) * ow + ox;
          for (int64_t ch = c0; ch < c1; ++ch) {
            const float m = yp[r * yld + ch];
            // The first position holding the maximum, in row-major window order.
            for (int64_t iy = win.y0; iy < win.y1; ++iy)
              for (int64_t ix = win.x0; ix < win.x1; ++ix) {
                const int64_t i = (b * h + iy) * w + ix;
                const float v = xp[i * xld + ch];
                if (v == m || (v != v && m != m)) {
                  dxp[i * dxld + ch] += dyp[r * dyld + ch];
                  goto next_channel;
                }
              }
          next_channel:;
          }
        }
    }
}

void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1), ow = y.dim(2);
  const int64_t xld = x.ld(), yld = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
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
}

void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate) {
  const int64_t n = dx.dim(0), h = dx.dim(1), w = dx.dim(2), c = dx.dim(3), oh = dy.dim(1), ow = dy.dim(2);
  if (!accumulate) zero_rows(dx);
  const int64_t dyld = dy.ld(), dxld = dx.ld();
  const float* dyp = dy.data();
  float* dxp = dx.data();
  const int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t cb = 0; cb < blocks; ++cb) {
      const int64_t c0 = cb * kChannelBlock, c1 = std::min(c, c0 + kChannelBlock);
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const Window win = window(p, h, w, oy, ox);
          const float inv = win.area > 0 ? 1.f / static_cast<float>(win.area) : 0.f;
          const float* g = dyp + ((b * oh + oy) * ow + ox) * dyld;
          for (int64_t iy = win.y0; iy < win.y1; ++iy)
            for (int64_t ix = win.x0; ix < win.x1; ++ix) {
              float* d = dxp + ((b * h + iy) * w + ix) * dxld;
              for (int64_t ch = c0; ch < c1; ++ch) d[ch] += g[ch] * inv;
            }
        }
    }
}

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  const int64_t n = x.dim(0), hw = x.dim(1) * x.dim(2), c = x.dim(3), xld = x.ld(), yld = y.ld();
  const float inv = hw ? 1.f / static_cast<float>(hw) : 0.f;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    std::vector<double> acc(static_cast<size_t>(c), 0.0);
    for (int64_t i = 0; i < hw; ++i) {
      const float* in = x.data() + (b * hw + i) * xld;
      for (int64_t ch = 0; ch < c; ++ch) acc[ch] += in[ch];
    }
    float* out = y.data() + b * yld;
    for (int64_t ch = 0; ch < c; ++ch) out[ch] = static_cast<float>(acc[ch]) * inv;
  }
}

void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t n = dx.dim(0), hw = dx.dim(1) * dx.dim(2), c = dx.dim(3), dxld = dx.ld(), dyld = dy.ld();
  const float inv = hw ? 1.f / static_cast<float>(hw) : 0.f;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < hw; ++i) {
      const float* g = dy.data() + b * dyld;
      float* d = dx.data() + (b * hw + i) * dxld;
      if (accumulate)
        for (int64_t ch = 0; ch < c; ++ch) d[ch] += g[ch] * inv;
      else
        for (int64_t ch = 0; ch < c; ++ch) d[ch] = g[ch] * inv;
    }
}

}  // namespace cpu
}  // namespace trick
