// Plain-loop reference implementations in double precision, written for clarity, not speed,
// and independent of the kernels they check. Layouts as in kernels/: NHWC activations,
// (O, KH, KW, C) conv weights, all contiguous.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/conv.h"
#include "kernels/pool.h"

namespace trick {
namespace ref {

using Vec = std::vector<double>;

inline Vec conv2d(const Vec& x, int64_t n, int64_t h, int64_t w, int64_t c, const Vec& wt, int64_t o, int64_t kh,
                  int64_t kw, const Vec& b, const Conv2dParams& p, int64_t* oh_out, int64_t* ow_out) {
  const int64_t oh = (h + p.pad_top + p.pad_bottom - kh) / p.stride_h + 1;
  const int64_t ow = (w + p.pad_left + p.pad_right - kw) / p.stride_w + 1;
  *oh_out = oh, *ow_out = ow;
  Vec y(static_cast<size_t>(n * oh * ow * o), 0.0);
  for (int64_t b0 = 0; b0 < n; ++b0)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t oc = 0; oc < o; ++oc) {
          double s = b.empty() ? 0.0 : b[oc];
          for (int64_t i = 0; i < kh; ++i)
            for (int64_t j = 0; j < kw; ++j) {
              const int64_t iy = oy * p.stride_h - p.pad_top + i, ix = ox * p.stride_w - p.pad_left + j;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              for (int64_t ch = 0; ch < c; ++ch)
                s += x[((b0 * h + iy) * w + ix) * c + ch] * wt[((oc * kh + i) * kw + j) * c + ch];
            }
          y[((b0 * oh + oy) * ow + ox) * o + oc] = p.relu ? std::max(0.0, s) : s;
        }
  return y;
}

// kind: 0 max, 1 average
inline Vec pool2d(const Vec& x, int64_t n, int64_t h, int64_t w, int64_t c, const Pool2dParams& p, int kind,
                  int64_t* oh_out, int64_t* ow_out) {
  const int64_t oh = (h + p.pad_top + p.pad_bottom - p.kernel_h) / p.stride_h + 1;
  const int64_t ow = (w + p.pad_left + p.pad_right - p.kernel_w) / p.stride_w + 1;
  *oh_out = oh, *ow_out = ow;
  Vec y(static_cast<size_t>(n * oh * ow * c));
  for (int64_t b0 = 0; b0 < n; ++b0)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t ch = 0; ch < c; ++ch) {
          double best = -std::numeric_limits<double>::infinity(), s = 0.0;
          int64_t real = 0, padded = 0;
          for (int64_t i = 0; i < p.kernel_h; ++i)
            for (int64_t j = 0; j < p.kernel_w; ++j) {
              const int64_t iy = oy * p.stride_h - p.pad_top + i, ix = ox * p.stride_w - p.pad_left + j;
              // PyTorch's divisor counts window positions inside the padded image only.
              if (iy < h + p.pad_bottom && ix < w + p.pad_right) ++padded;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              const double v = x[((b0 * h + iy) * w + ix) * c + ch];
              best = std::max(best, v);
              s += v;
              ++real;
            }
          y[((b0 * oh + oy) * ow + ox) * c + ch] =
              kind == 0 ? best : s / static_cast<double>(p.count_include_pad ? padded : real);
        }
  return y;
}

inline Vec global_avg_pool(const Vec& x, int64_t n, int64_t hw, int64_t c) {
  Vec y(static_cast<size_t>(n * c), 0.0);
  for (int64_t b0 = 0; b0 < n; ++b0)
    for (int64_t i = 0; i < hw; ++i)
      for (int64_t ch = 0; ch < c; ++ch) y[b0 * c + ch] += x[(b0 * hw + i) * c + ch] / static_cast<double>(hw);
  return y;
}

// Training-mode batch norm over rows of (rows, c).
inline Vec batch_norm(const Vec& x, int64_t rows, int64_t c, const Vec& gamma, const Vec& beta, double eps) {
  Vec y(x.size());
  for (int64_t ch = 0; ch < c; ++ch) {
    double m = 0, v = 0;
    for (int64_t r = 0; r < rows; ++r) m += x[r * c + ch];
    m /= rows;
    for (int64_t r = 0; r < rows; ++r) v += (x[r * c + ch] - m) * (x[r * c + ch] - m);
    v /= rows;
    for (int64_t r = 0; r < rows; ++r) y[r * c + ch] = (x[r * c + ch] - m) / std::sqrt(v + eps) * gamma[ch] + beta[ch];
  }
  return y;
}

inline Vec linear(const Vec& x, int64_t n, int64_t in, const Vec& w, int64_t out, const Vec& b) {
  Vec y(static_cast<size_t>(n * out));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (int64_t k = 0; k < in; ++k) s += x[i * in + k] * w[o * in + k];
      y[i * out + o] = s;
    }
  return y;
}

inline Vec log_softmax(const Vec& x, int64_t n, int64_t k) {
  Vec y(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < k; ++j) m = std::max(m, x[i * k + j]);
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += std::exp(x[i * k + j] - m);
    for (int64_t j = 0; j < k; ++j) y[i * k + j] = x[i * k + j] - m - std::log(s);
  }
  return y;
}

inline Vec softmax(const Vec& x, int64_t n, int64_t k) {
  Vec y = log_softmax(x, n, k);
  for (double& v : y) v = std::exp(v);
  return y;
}

inline Vec cross_entropy(const Vec& logits, int64_t n, int64_t k, const std::vector<int64_t>& targets) {
  const Vec ls = log_softmax(logits, n, k);
  Vec y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[i] = -ls[i * k + targets[i]];
  return y;
}

}  // namespace ref
}  // namespace trick
