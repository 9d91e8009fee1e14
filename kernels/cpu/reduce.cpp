// CPU reductions, accumulated in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/reduce.h"

namespace trick {
namespace cpu {

void sum_all(const Tensor& x, Tensor& y) {
  const int64_t rows = x.rows(), c = x.cols(), ld = x.ld();
  // Partial sums over fixed blocks of rows, added in block order: the same result on any
  // thread count.
  const int64_t per = std::max<int64_t>(1, 65536 / std::max<int64_t>(c, 1));
  const int64_t blocks = (rows + per - 1) / per;
  std::vector<double> part(static_cast<size_t>(blocks), 0.0);
  parallel_for(blocks, [&](int64_t b) {
    double s = 0.0;
    for (int64_t r = b * per; r < std::min(rows, (b + 1) * per); ++r)
      for (int64_t j = 0; j < c; ++j) s += x.data()[r * ld + j];
    part[b] = s;
  });
  double s = 0.0;
  for (double v : part) s += v;
  y.data()[0] = static_cast<float>(s);
}

void max_all(const Tensor& x, Tensor& y, int64_t* argmax) {
  const int64_t rows = x.rows(), c = x.cols(), ld = x.ld();
  float best = x.data()[0];
  int64_t at = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) {
      const float v = x.data()[r * ld + j];
      if (v > best || (v != v && best == best)) best = v, at = r * c + j;
    }
  y.data()[0] = best;
  if (argmax) *argmax = at;
}

void sum_per_item(const Tensor& x, bool square, Tensor& y) {
  const int64_t n = x.dim(0), per = n ? x.numel() / n : 0;
  parallel_range(n, std::max<int64_t>(1, 65536 / std::max<int64_t>(per, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* p = x.data() + b * per;
      double s = 0.0;
      if (square)
        for (int64_t i = 0; i < per; ++i) s += static_cast<double>(p[i]) * p[i];
      else
        for (int64_t i = 0; i < per; ++i) s += p[i];
      y.data()[b] = static_cast<float>(s);
    }
  });
}

void max_abs_per_item(const Tensor& x, Tensor& y) {
  const int64_t n = x.dim(0), per = n ? x.numel() / n : 0;
  parallel_range(n, std::max<int64_t>(1, 65536 / std::max<int64_t>(per, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* p = x.data() + b * per;
      float m = 0.f;
      for (int64_t i = 0; i < per; ++i) m = std::fmax(m, std::fabs(p[i]));
      y.data()[b] = m;
    }
  });
}

void sum_rows(const Tensor& x, Tensor& y, bool accumulate) {
  const int64_t rows = x.rows(), c = x.cols(), ld = x.ld();
  std::vector<double> s(static_cast<size_t>(c), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) s[j] += x.data()[r * ld + j];
  for (int64_t j = 0; j < c; ++j) y.data()[j] = static_cast<float>((accumulate ? y.data()[j] : 0.0) + s[j]);
}

}  // namespace cpu
}  // namespace trick
