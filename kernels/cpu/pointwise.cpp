// CPU elementwise ops over row-strided tensors: a parallel loop over rows, a simple
// vectorisable loop over the contiguous last dim.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/pointwise.h"

namespace trick {
namespace cpu {

namespace {
// f(row pointers..., cols) for every row, in parallel.
// Blocks of at least 32768 elements: smaller ops run on the calling thread.
template <typename F>
void for_rows(const Tensor& shape_of, F f) {
  const int64_t rows = shape_of.rows(), cols = std::max<int64_t>(1, shape_of.cols());
  parallel_range(rows, std::max<int64_t>(1, 32768 / cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) f(r);
  });
}
}  // namespace

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) {
  const int64_t c = a.cols(), la = a.ld(), lb = b.ld(), ly = y.ld();
  const float *ap = a.data(), *bp = b.data();
  float* yp = y.data();
  for_rows(a, [&](int64_t r) {
    const float* x0 = ap + r * la;
    const float* x1 = bp + r * lb;
    float* o = yp + r * ly;
    switch (op) {
      case BinaryOp::Add: for (int64_t j = 0; j < c; ++j) o[j] = x0[j] + x1[j]; break;
      case BinaryOp::Sub: for (int64_t j = 0; j < c; ++j) o[j] = x0[j] - x1[j]; break;
      case BinaryOp::Mul: for (int64_t j = 0; j < c; ++j) o[j] = x0[j] * x1[j]; break;
    }
  });
}

void unary(UnaryOp op, const Tensor& x, Tensor& y, float a, float b) {
  const int64_t c = x.cols(), lx = x.ld(), ly = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
  for_rows(x, [&](int64_t r) {
    const float* i = xp + r * lx;
    float* o = yp + r * ly;
    switch (op) {
      case UnaryOp::Affine: for (int64_t j = 0; j < c; ++j) o[j] = a * i[j] + b; break;
      case UnaryOp::Relu: for (int64_t j = 0; j < c; ++j) o[j] = i[j] > 0.f ? i[j] : 0.f; break;
      case UnaryOp::Sign: for (int64_t j = 0; j < c; ++j) o[j] = static_cast<float>((i[j] > 0.f) - (i[j] < 0.f)); break;
      case UnaryOp::Clamp:  // std::fmin(std::fmax(x, a), b) for bounds that are not NaN, vectorisable
        for (int64_t j = 0; j < c; ++j) {
          const float t = i[j] > a ? i[j] : a;
          o[j] = t < b ? t : b;
        }
        break;
      case UnaryOp::Square: for (int64_t j = 0; j < c; ++j) o[j] = i[j] * i[j]; break;
      case UnaryOp::Exp: for (int64_t j = 0; j < c; ++j) o[j] = std::exp(i[j]); break;
      case UnaryOp::Abs: for (int64_t j = 0; j < c; ++j) o[j] = std::fabs(i[j]); break;
      case UnaryOp::Tanh: for (int64_t j = 0; j < c; ++j) o[j] = std::tanh(i[j]); break;
    }
  });
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  const int64_t c = x.cols(), lx = x.ld(), ly = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
  for_rows(x, [&](int64_t r) {
    const float* i = xp + r * lx;
    float* o = yp + r * ly;
    for (int64_t j = 0; j < c; ++j) o[j] += alpha * i[j];
  });
}

void clamp_backward(const Tensor& x, float lo, float hi, const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t c = x.cols(), lx = x.ld(), lg = dy.ld(), ld = dx.ld();
  for_rows(x, [&](int64_t r) {
    const float* i = x.data() + r * lx;
    const float* g = dy.data() + r * lg;
    float* o = dx.data() + r * ld;
    for (int64_t j = 0; j < c; ++j) {
      const float v = (i[j] >= lo && i[j] <= hi) ? g[j] : 0.f;
      o[j] = accumulate ? o[j] + v : v;
    }
  });
}

void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  const int64_t c = y.cols(), lyy = y.ld(), lg = dy.ld(), ld = dx.ld();
  for_rows(y, [&](int64_t r) {
    const float* i = y.data() + r * lyy;
    const float* g = dy.data() + r * lg;
    float* o = dx.data() + r * ld;
    for (int64_t j = 0; j < c; ++j) {
      const float v = i[j] > 0.f ? g[j] : 0.f;
      o[j] = accumulate ? o[j] + v : v;
    }
  });
}

void mul_accumulate(const Tensor& dy, const Tensor& m, Tensor& dx, bool accumulate) {
  const int64_t c = dy.cols(), lg = dy.ld(), lm = m.ld(), ld = dx.ld();
  for_rows(dy, [&](int64_t r) {
    const float* g = dy.data() + r * lg;
    const float* k = m.data() + r * lm;
    float* o = dx.data() + r * ld;
    for (int64_t j = 0; j < c; ++j) o[j] = accumulate ? o[j] + g[j] * k[j] : g[j] * k[j];
  });
}

void add_bias(const Tensor& b, bool relu, Tensor& y) {
  const int64_t c = y.cols(), ly = y.ld();
  const float* bp = b.data();
  float* yp = y.data();
  for_rows(y, [&](int64_t r) {
    float* o = yp + r * ly;
    for (int64_t j = 0; j < c; ++j) o[j] += bp[j];
    if (relu)
      for (int64_t j = 0; j < c; ++j) o[j] = o[j] > 0.f ? o[j] : 0.f;
  });
}

}  // namespace cpu
}  // namespace trick
