// Pooling, NHWC.
//
//   x:  (N, H, W, C)   row-strided
//   y:  (N, OH, OW, C) row-strided, preallocated
//
// Max-pool backward recomputes each window's argmax from x and y (the first maximum in
// row-major window order, as PyTorch picks it) instead of storing indices.
// Average-pool divides by the window area including padding (count_include_pad, what
// torchvision's Inception uses) or by the number of real pixels in the window.
#pragma once
#include "tensor/tensor.h"

namespace trick {

struct Pool2dParams {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  bool count_include_pad = true;  // average pool only
  static Pool2dParams square(int k, int stride, int pad = 0, bool count_include_pad = true) {
    Pool2dParams p;
    p.kernel_h = p.kernel_w = k;
    p.stride_h = p.stride_w = stride;
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = pad;
    p.count_include_pad = count_include_pad;
    return p;
  }
};

Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p, const char* op);

void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y);
void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate);
void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y);
void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate);
// y: (N, C) = mean over H, W of x: (N, H, W, C)
void global_avg_pool_forward(const Tensor& x, Tensor& y);
void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate);

namespace cpu {
void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y);
void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate);
void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y);
void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate);
void global_avg_pool_forward(const Tensor& x, Tensor& y);
void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate);
}  // namespace cpu
namespace cuda {
void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y);
void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate);
void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y);
void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate);
void global_avg_pool_forward(const Tensor& x, Tensor& y);
void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate);
}  // namespace cuda

}  // namespace trick
