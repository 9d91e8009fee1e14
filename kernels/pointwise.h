// Elementwise ops. Every tensor argument of one call has the same shape; inputs and outputs
// may be row-strided views (channel slices), and an output may alias an input.
#pragma once
#include "tensor/tensor.h"

namespace trick {

enum class BinaryOp { Add, Sub, Mul };
enum class UnaryOp { Affine, Relu, Sign, Clamp, Square, Exp, Abs, Tanh };

// y = a op b
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y);
// y = f(x): Affine -> a * x + b; Clamp -> min(max(x, a), b); Relu, Sign (0 at 0), Square, Exp, Abs, Tanh
void unary(UnaryOp op, const Tensor& x, Tensor& y, float a = 1.f, float b = 0.f);
// y += alpha * x
void axpy(float alpha, const Tensor& x, Tensor& y);
// dx (+)= dy where lo <= x <= hi (the clamp's gradient, as PyTorch defines it), else 0.
void clamp_backward(const Tensor& x, float lo, float hi, const Tensor& dy, Tensor& dx, bool accumulate);
// dx (+)= dy * (y > 0): ReLU backward from its output.
void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
// dx (+)= dy * m (elementwise product written to the first argument's gradient).
void mul_accumulate(const Tensor& dy, const Tensor& m, Tensor& dx, bool accumulate);
// Copies src into dst (dst may be a channel slice): the forward of concat.
void copy(const Tensor& src, Tensor& dst);
// y[r, :] += b for every row r (b: (C), y: (R, C) row-strided); then max(0, .) when relu.
void add_bias(const Tensor& b, bool relu, Tensor& y);

namespace cpu {
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y);
void unary(UnaryOp op, const Tensor& x, Tensor& y, float a, float b);
void axpy(float alpha, const Tensor& x, Tensor& y);
void clamp_backward(const Tensor& x, float lo, float hi, const Tensor& dy, Tensor& dx, bool accumulate);
void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
void mul_accumulate(const Tensor& dy, const Tensor& m, Tensor& dx, bool accumulate);
void add_bias(const Tensor& b, bool relu, Tensor& y);
}  // namespace cpu
namespace cuda {
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y);
void unary(UnaryOp op, const Tensor& x, Tensor& y, float a, float b);
void axpy(float alpha, const Tensor& x, Tensor& y);
void clamp_backward(const Tensor& x, float lo, float hi, const Tensor& dy, Tensor& dx, bool accumulate);
void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
void mul_accumulate(const Tensor& dy, const Tensor& m, Tensor& dx, bool accumulate);
void copy(const Tensor& src, Tensor& dst);
void add_bias(const Tensor& b, bool relu, Tensor& y);
}  // namespace cuda

}  // namespace trick
