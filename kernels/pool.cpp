// Pooling: argument checks and dispatch.
#include "kernels/pool.h"

#include "kernels/check.h"

namespace trick {

Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p, const char* op) {
  TRICK_CHECK(x.ndim == 4, op, ": input must be (N, H, W, C), got ", x.str());
  TRICK_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1 && p.stride_h >= 1 && p.stride_w >= 1, op,
              ": kernel and stride must be >= 1");
  TRICK_CHECK(p.pad_top >= 0 && p.pad_bottom >= 0 && p.pad_left >= 0 && p.pad_right >= 0 &&
                  p.pad_top < p.kernel_h && p.pad_bottom < p.kernel_h && p.pad_left < p.kernel_w &&
                  p.pad_right < p.kernel_w,
              op, ": padding must be >= 0 and smaller than the kernel");
  const int64_t hp = x[1] + p.pad_top + p.pad_bottom, wp = x[2] + p.pad_left + p.pad_right;
  TRICK_CHECK(hp >= p.kernel_h && wp >= p.kernel_w, op, ": input ", x.str(), " is smaller than the ", p.kernel_h,
              "x", p.kernel_w, " window");
  return Shape{x[0], (hp - p.kernel_h) / p.stride_h + 1, (wp - p.kernel_w) / p.stride_w + 1, x[3]};
}

namespace {
void check_pool(const char* op, const Tensor& x, const Tensor& y, const Pool2dParams& p) {
  check_row_strided(op, "input", x);
  check_row_strided(op, "output", y);
  const Shape want = pool2d_output_shape(x.shape(), p, op);
  TRICK_CHECK(y.shape() == want, op, ": output has shape ", y.shape().str(), ", expected ", want.str(),
              " for input ", x.shape().str());
}
}  // namespace

void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const Device dev = check_same_device("max_pool2d", {&x, &y});
  check_pool("max_pool2d", x, y, p);
  TRICK_DISPATCH("max_pool2d", dev, max_pool2d_forward, x, p, y);
}

void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate) {
  const Device dev = check_same_device("max_pool2d_backward", {&x, &y, &dy, &dx});
  check_pool("max_pool2d_backward", x, y, p);
  check_same_shape("max_pool2d_backward", "output", y, "output gradient", dy);
  check_same_shape("max_pool2d_backward", "input", x, "input gradient", dx);
  check_row_strided("max_pool2d_backward", "output gradient", dy);
  check_row_strided("max_pool2d_backward", "input gradient", dx);
  TRICK_DISPATCH("max_pool2d_backward", dev, max_pool2d_backward, x, y, dy, p, dx, accumulate);
}

void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const Device dev = check_same_device("avg_pool2d", {&x, &y});
  check_pool("avg_pool2d", x, y, p);
  TRICK_DISPATCH("avg_pool2d", dev, avg_pool2d_forward, x, p, y);
}

void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("avg_pool2d_backward", {&dy, &dx});
  check_pool("avg_pool2d_backward", dx, dy, p);
  TRICK_DISPATCH("avg_pool2d_backward", dev, avg_pool2d_backward, dy, p, dx, accumulate);
}

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  const Device dev = check_same_device("global_avg_pool", {&x, &y});
  check_ndim("global_avg_pool", "input", x, 4);
  check_row_strided("global_avg_pool", "input", x);
  check_shape("global_avg_pool", "output", y, Shape{x.dim(0), x.dim(3)});
  check_row_strided("global_avg_pool", "output", y);
  TRICK_DISPATCH("global_avg_pool", dev, global_avg_pool_forward, x, y);
}

void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("global_avg_pool_backward", {&dy, &dx});
  check_ndim("global_avg_pool_backward", "input gradient", dx, 4);
  check_row_strided("global_avg_pool_backward", "input gradient", dx);
  check_shape("global_avg_pool_backward", "output gradient", dy, Shape{dx.dim(0), dx.dim(3)});
  check_row_strided("global_avg_pool_backward", "output gradient", dy);
  TRICK_DISPATCH("global_avg_pool_backward", dev, global_avg_pool_backward, dy, dx, accumulate);
}

}  // namespace trick
