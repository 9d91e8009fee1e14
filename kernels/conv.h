// 2-D convolution, NHWC, with its two gradients.
//
//   x:  (N, H, W, C)      row-strided (may be a channel slice of a larger tensor)
//   w:  (O, KH, KW, C)    contiguous (PyTorch's OIHW is permuted at load time)
//   b:  (O)               or undefined
//   y:  (N, OH, OW, O)    row-strided, preallocated (may be a channel slice: concat is free)
//
// OH = (H + pad_top + pad_bottom - KH) / stride_h + 1, likewise OW.
// The ReLU epilogue (relu = true) is applied to y in place of a separate op; its backward
// is the caller's: dgrad/wgrad take dy already multiplied by the ReLU mask (relu_backward).
#pragma once
#include <string>

#include "tensor/tensor.h"

namespace trick {

struct Conv2dParams {
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  bool relu = false;  // fused ReLU epilogue on the forward output
  std::string name;   // the layer's name, for error messages
  static Conv2dParams same(int stride, int pad_h, int pad_w, bool relu = false) {
    Conv2dParams p;
    p.stride_h = p.stride_w = stride;
    p.pad_top = p.pad_bottom = pad_h;
    p.pad_left = p.pad_right = pad_w;
    p.relu = relu;
    return p;
  }
};

// The output shape for x and w; throws naming the layer if the shapes do not fit.
Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p);
// A 1x1, stride-1, unpadded layer (kh x kw kernel): a plain GEMM on the rows as they are.
inline bool conv2d_pointwise(int64_t kh, int64_t kw, const Conv2dParams& p) {
  return kh == 1 && kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 && p.pad_bottom == 0 &&
         p.pad_left == 0 && p.pad_right == 0;
}

// y = relu?(conv(x, w) + b)
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y);
// dx (+)= dgrad(dy, w): the gradient with respect to the input.
void conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);
// dw (+)= wgrad(x, dy); db (+)= sum of dy over N, OH, OW when db is defined.
void conv2d_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, Tensor& db,
                  bool accumulate);

// While one of these lives (on any thread), its owner promises that no convolution weight
// changes in place, and the CPU engines keep each layer's packed (and Winograd-transformed)
// weights from one call to the next instead of preparing them again every call
// (kernels/cpu/prepared.h); they are dropped when the last one ends. Results are bit for bit
// those without it. The attack loop and `trick bench` open one; an optimizer step inside one
// is an error. Scopes nest; GPU backends ignore them.
class FrozenConvWeights {
 public:
  FrozenConvWeights();
  ~FrozenConvWeights();
  FrozenConvWeights(const FrozenConvWeights&) = delete;
  FrozenConvWeights& operator=(const FrozenConvWeights&) = delete;
  static bool open();  // whether any is alive
};

// Counts of calls, so tests can prove that frozen weights never run wgrad.
struct ConvCallCounts {
  int64_t forward = 0, dgrad = 0, wgrad = 0;
};
ConvCallCounts& conv_call_counts();

namespace cpu {
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y);
void conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);
void conv2d_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, Tensor& db,
                  bool accumulate);
}  // namespace cpu
namespace cuda {
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y);
void conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);
void conv2d_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, Tensor& db,
                  bool accumulate);
}  // namespace cuda

}  // namespace trick
