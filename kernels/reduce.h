// Reductions.
//
//   sum_all / max_all:  x any shape -> y (1)
//   sum_per_item:       x (N, ...) -> y (N): the sum over everything but the batch dim
//                       (with square = true: the sum of squares, for L2 norms)
//   max_abs_per_item:   x (N, ...) -> y (N): max |x| per item (L-infinity norms)
//   sum_rows:           x (R, C) row-strided -> y (C): the sum over rows (bias gradients)
#pragma once
#include "tensor/tensor.h"

namespace trick {

void sum_all(const Tensor& x, Tensor& y);
// y = max of x; *argmax (when not null) = the row-major index of its first occurrence.
void max_all(const Tensor& x, Tensor& y, int64_t* argmax);
void sum_per_item(const Tensor& x, bool square, Tensor& y);
void max_abs_per_item(const Tensor& x, Tensor& y);
void sum_rows(const Tensor& x, Tensor& y, bool accumulate);

namespace cpu {
void sum_all(const Tensor& x, Tensor& y);
void max_all(const Tensor& x, Tensor& y, int64_t* argmax);
void sum_per_item(const Tensor& x, bool square, Tensor& y);
void max_abs_per_item(const Tensor& x, Tensor& y);
void sum_rows(const Tensor& x, Tensor& y, bool accumulate);
}  // namespace cpu
namespace cuda {
void sum_all(const Tensor& x, Tensor& y);
void max_all(const Tensor& x, Tensor& y, int64_t* argmax);
void sum_per_item(const Tensor& x, bool square, Tensor& y);
void max_abs_per_item(const Tensor& x, Tensor& y);
void sum_rows(const Tensor& x, Tensor& y, bool accumulate);
}  // namespace cuda

}  // namespace trick
