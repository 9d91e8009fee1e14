// CUDA elementwise ops over row-strided tensors: one thread per element, (row, col) from
// a flat index (kernels/cuda/elementwise.cuh). Each expression is the CPU twin's, so NaN
// and signed zeros behave the same (kernels/cpu/pointwise.cpp).
#include "kernels/cuda/elementwise.cuh"
#include "kernels/pointwise.h"

namespace trick {
namespace cuda {

namespace {

struct BinaryF {
  BinaryOp op;
  ConstRowView a, b;
  RowView y;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float u = a.at(r, c), v = b.at(r, c);
    y.at(r, c) = op == BinaryOp::Add ? u + v : op == BinaryOp::Sub ? u - v : u * v;
  }
};

struct UnaryF {
  UnaryOp op;
  ConstRowView x;
  RowView y;
  float a, b;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float v = x.at(r, c);
    float o;
    switch (op) {
      case UnaryOp::Affine: o = a * v + b; break;
      case UnaryOp::Relu: o = v > 0.f ? v : 0.f; break;
      case UnaryOp::Sign: o = static_cast<float>((v > 0.f) - (v < 0.f)); break;
      case UnaryOp::Clamp: o = fminf(fmaxf(v, a), b); break;
      case UnaryOp::Square: o = v * v; break;
      case UnaryOp::Exp: o = expf(v); break;
      case UnaryOp::Abs: o = fabsf(v); break;
      case UnaryOp::Tanh: o = tanhf(v); break;
      default: o = v; break;
    }
    y.at(r, c) = o;
  }
};

struct AxpyF {
  float alpha;
  ConstRowView x;
  RowView y;
  __device__ void operator()(uint32_t r, uint32_t c) const { y.at(r, c) += alpha * x.at(r, c); }
};

struct ClampBackwardF {
  ConstRowView x, dy;
  RowView dx;
  float lo, hi;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float i = x.at(r, c);
    const float v = (i >= lo && i <= hi) ? dy.at(r, c) : 0.f;
    float& o = dx.at(r, c);
    o = accumulate ? o + v : v;
  }
};

struct ReluBackwardF {
  ConstRowView y, dy;
  RowView dx;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float v = y.at(r, c) > 0.f ? dy.at(r, c) : 0.f;
    float& o = dx.at(r, c);
    o = accumulate ? o + v : v;
  }
};

struct MulAccumulateF {
  ConstRowView dy, m;
  RowView dx;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float v = dy.at(r, c) * m.at(r, c);
    float& o = dx.at(r, c);
    o = accumulate ? o + v : v;
  }
};

struct CopyF {
  ConstRowView src;
  RowView dst;
  __device__ void operator()(uint32_t r, uint32_t c) const { dst.at(r, c) = src.at(r, c); }
};

struct AddBiasF {
  const float* b;
  RowView y;
  bool relu;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    float v = y.at(r, c) + b[c];
    if (relu) v = v > 0.f ? v : 0.f;
    y.at(r, c) = v;
  }
};

}  // namespace

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) {
  DeviceGuard g(a.device());
  launch_map("binary", a.rows(), a.cols(), BinaryF{op, cview(a), cview(b), view(y)});
}

void unary(UnaryOp op, const Tensor& x, Tensor& y, float a, float b) {
  DeviceGuard g(x.device());
  launch_map("unary", x.rows(), x.cols(), UnaryF{op, cview(x), view(y), a, b});
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  DeviceGuard g(x.device());
  launch_map("axpy", x.rows(), x.cols(), AxpyF{alpha, cview(x), view(y)});
}

void clamp_backward(const Tensor& x, float lo, float hi, const Tensor& dy, Tensor& dx, bool accumulate) {
  DeviceGuard g(x.device());
  launch_map("clamp_backward", x.rows(), x.cols(), ClampBackwardF{cview(x), cview(dy), view(dx), lo, hi, accumulate});
}

void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  DeviceGuard g(y.device());
  launch_map("relu_backward", y.rows(), y.cols(), ReluBackwardF{cview(y), cview(dy), view(dx), accumulate});
}

void mul_accumulate(const Tensor& dy, const Tensor& m, Tensor& dx, bool accumulate) {
  DeviceGuard g(dy.device());
  launch_map("mul_backward", dy.rows(), dy.cols(), MulAccumulateF{cview(dy), cview(m), view(dx), accumulate});
}

void copy(const Tensor& src, Tensor& dst) {
  DeviceGuard g(src.device());
  launch_map("copy", src.rows(), src.cols(), CopyF{cview(src), view(dst)});
}

void add_bias(const Tensor& b, bool relu, Tensor& y) {
  DeviceGuard g(y.device());
  launch_map("add_bias", y.rows(), y.cols(), AddBiasF{b.data(), view(y), relu});
}

}  // namespace cuda
}  // namespace trick
