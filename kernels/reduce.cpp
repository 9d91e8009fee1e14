// Reductions: argument checks and dispatch.
#include "kernels/reduce.h"

#include "kernels/check.h"

namespace trick {

void sum_all(const Tensor& x, Tensor& y) {
  const Device dev = check_same_device("sum", {&x, &y});
  check_row_strided("sum", "input", x);
  check_shape("sum", "output", y, Shape{1});
  TRICK_DISPATCH("sum", dev, sum_all, x, y);
}

void max_all(const Tensor& x, Tensor& y, int64_t* argmax) {
  const Device dev = check_same_device("max", {&x, &y});
  check_row_strided("max", "input", x);
  TRICK_CHECK(x.numel() > 0, "max: empty input of shape ", x.shape().str());
  check_shape("max", "output", y, Shape{1});
  TRICK_DISPATCH("max", dev, max_all, x, y, argmax);
}

void sum_per_item(const Tensor& x, bool square, Tensor& y) {
  const Device dev = check_same_device("sum_per_item", {&x, &y});
  check_contiguous("sum_per_item", "input", x);
  TRICK_CHECK(x.ndim() >= 1, "sum_per_item: input must have a batch dim");
  check_shape("sum_per_item", "output", y, Shape{x.dim(0)});
  TRICK_DISPATCH("sum_per_item", dev, sum_per_item, x, square, y);
}

void max_abs_per_item(const Tensor& x, Tensor& y) {
  const Device dev = check_same_device("max_abs_per_item", {&x, &y});
  check_contiguous("max_abs_per_item", "input", x);
  TRICK_CHECK(x.ndim() >= 1, "max_abs_per_item: input must have a batch dim");
  check_shape("max_abs_per_item", "output", y, Shape{x.dim(0)});
  TRICK_DISPATCH("max_abs_per_item", dev, max_abs_per_item, x, y);
}

void sum_rows(const Tensor& x, Tensor& y, bool accumulate) {
  const Device dev = check_same_device("sum_rows", {&x, &y});
  check_row_strided("sum_rows", "input", x);
  check_shape("sum_rows", "output", y, Shape{x.cols()});
  TRICK_DISPATCH("sum_rows", dev, sum_rows, x, y, accumulate);
}

}  // namespace trick
