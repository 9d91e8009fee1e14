// Elementwise ops: argument checks and dispatch.
#include "kernels/pointwise.h"

#include "kernels/check.h"

namespace trick {

namespace {
void check_pair(const char* op, const char* an, const Tensor& a, const char* bn, const Tensor& b) {
  check_row_strided(op, an, a);
  check_row_strided(op, bn, b);
  check_same_shape(op, an, a, bn, b);
}
const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
  }
  return "binary";
}
}  // namespace

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) {
  const char* name = binary_name(op);
  const Device dev = check_same_device(name, {&a, &b, &y});
  check_pair(name, "a", a, "b", b);
  check_pair(name, "a", a, "output", y);
  TRICK_DISPATCH(name, dev, binary, op, a, b, y);
}

void unary(UnaryOp op, const Tensor& x, Tensor& y, float a, float b) {
  const Device dev = check_same_device("unary", {&x, &y});
  check_pair("unary", "input", x, "output", y);
  if (op == UnaryOp::Clamp) TRICK_CHECK(a <= b, "clamp: lower bound ", a, " above upper bound ", b);
  TRICK_DISPATCH("unary", dev, unary, op, x, y, a, b);
}

void axpy(float alpha, const Tensor& x, Tensor& y) {
  const Device dev = check_same_device("axpy", {&x, &y});
  check_pair("axpy", "x", x, "y", y);
  TRICK_DISPATCH("axpy", dev, axpy, alpha, x, y);
}

void clamp_backward(const Tensor& x, float lo, float hi, const Tensor& dy, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("clamp_backward", {&x, &dy, &dx});
  check_pair("clamp_backward", "input", x, "output gradient", dy);
  check_pair("clamp_backward", "input", x, "input gradient", dx);
  TRICK_DISPATCH("clamp_backward", dev, clamp_backward, x, lo, hi, dy, dx, accumulate);
}

void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("relu_backward", {&y, &dy, &dx});
  check_pair("relu_backward", "output", y, "output gradient", dy);
  check_pair("relu_backward", "output", y, "input gradient", dx);
  TRICK_DISPATCH("relu_backward", dev, relu_backward, y, dy, dx, accumulate);
}

void mul_accumulate(const Tensor& dy, const Tensor& m, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("mul_backward", {&dy, &m, &dx});
  check_pair("mul_backward", "output gradient", dy, "other input", m);
  check_pair("mul_backward", "output gradient", dy, "input gradient", dx);
  TRICK_DISPATCH("mul_backward", dev, mul_accumulate, dy, m, dx, accumulate);
}

void copy(const Tensor& src, Tensor& dst) {
  check_same_shape("copy", "source", src, "destination", dst);
  if (src.device().is_cpu() || dst.device() != src.device()) {
    dst.copy_from(src);
    return;
  }
#if defined(TRICK_WITH_CUDA) && defined(TRICK_CUDA_KERNELS)
  check_row_strided("copy", "source", src);
  check_row_strided("copy", "destination", dst);
  cuda::copy(src, dst);
#else
  no_cuda("copy");
#endif
}

void add_bias(const Tensor& b, bool relu, Tensor& y) {
  const Device dev = check_same_device("add_bias", {&b, &y});
  check_row_strided("add_bias", "output", y);
  check_shape("add_bias", "bias", b, Shape{y.cols()});
  TRICK_DISPATCH("add_bias", dev, add_bias, b, relu, y);
}

}  // namespace trick
