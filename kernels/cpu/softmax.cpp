// CPU softmax family; per row, max-subtracted, accumulated in double.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/softmax.h"

namespace trick {
namespace cpu {

namespace {
// Writes log-softmax of row x into out (as double math) and returns nothing.
void log_softmax_row(const float* x, int64_t k, float* out) {
  float m = x[0];
  for (int64_t j = 1; j < k; ++j) m = std::fmax(m, x[j]);
  double s = 0.0;
  for (int64_t j = 0; j < k; ++j) s += std::exp(static_cast<double>(x[j]) - m);
  const double lse = m + std::log(s);
  for (int64_t j = 0; j < k; ++j) out[j] = static_cast<float>(x[j] - lse);
}
// f(i) for every row i < n of k entries, split over the CPU threads.
template <typename F>
void each_row(int64_t n, int64_t k, F f) {
  parallel_range(n, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}
}  // namespace

void softmax(const Tensor& x, Tensor& y) {
  const int64_t n = x.dim(0), k = x.dim(1);
  each_row(n, k, [&](int64_t i) {
    float* out = y.data() + i * y.ld();
    log_softmax_row(x.data() + i * x.ld(), k, out);
    for (int64_t j = 0; j < k; ++j) out[j] = std::exp(out[j]);
  });
}

void log_softmax(const Tensor& x, Tensor& y) {
  const int64_t n = x.dim(0), k = x.dim(1);
  each_row(n, k, [&](int64_t i) { log_softmax_row(x.data() + i * x.ld(), k, y.data() + i * y.ld()); });
}

void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t n = y.dim(0), k = y.dim(1);
  each_row(n, k, [&](int64_t i) {
    const float *p = y.data() + i * y.ld(), *g = dy.data() + i * dy.ld();
    float* o = dx.data() + i * dx.ld();
    double dot = 0.0;
    for (int64_t j = 0; j < k; ++j) dot += static_cast<double>(g[j]) * p[j];
    for (int64_t j = 0; j < k; ++j) {
      const float v = static_cast<float>(p[j] * (g[j] - dot));
      o[j] = accumulate ? o[j] + v : v;
    }
  });
}

void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t n = y.dim(0), k = y.dim(1);
  each_row(n, k, [&](int64_t i) {
    const float *ls = y.data() + i * y.ld(), *g = dy.data() + i * dy.ld();
    float* o = dx.data() + i * dx.ld();
    double s = 0.0;
    for (int64_t j = 0; j < k; ++j) s += g[j];
    for (int64_t j = 0; j < k; ++j) {
      const float v = static_cast<float>(g[j] - std::exp(static_cast<double>(ls[j])) * s);
      o[j] = accumulate ? o[j] + v : v;
    }
  });
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs, Tensor& losses) {
  const int64_t n = logits.dim(0), k = logits.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    float* p = probs.data() + i * probs.ld();
    log_softmax_row(logits.data() + i * logits.ld(), k, p);
    const int64_t t = static_cast<int64_t>(targets.data()[i]);
    losses.data()[i] = -p[t];
    for (int64_t j = 0; j < k; ++j) p[j] = std::exp(p[j]);
  }
}

void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const Tensor& dlosses, Tensor& dlogits,
                            bool accumulate) {
  const int64_t n = probs.dim(0), k = probs.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    const float* p = probs.data() + i * probs.ld();
    float* o = dlogits.data() + i * dlogits.ld();
    const int64_t t = static_cast<int64_t>(targets.data()[i]);
    const float g = dlosses.data()[i];
    for (int64_t j = 0; j < k; ++j) {
      const float v = g * (p[j] - (j == t ? 1.f : 0.f));
      o[j] = accumulate ? o[j] + v : v;
    }
  }
}

}  // namespace cpu
}  // namespace trick
