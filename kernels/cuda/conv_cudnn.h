// The cuDNN v9 convolution backend (legacy convolution API), used by kernels/cuda/conv.cu
// when conv_backend() is Cudnn. Tensors are described as NHWC with their real row stride
// (cudnnSetTensor4dDescriptorEx), so channel slices are passed in place; when cuDNN
// refuses a strided layout, or an operand does not start on 16 bytes (the algorithm is
// chosen per shape, not per address), the data goes through packed copies instead. Per shape the
// algorithm and its descriptors are chosen once and cached: measured (cudnnFind*, the
// fastest) or from cuDNN's heuristic ranking (cudnnGet*_v7) as cudnn_algo() says
// (kernels/backend.h), always deterministic and within the math mode and a 1 GiB
// workspace; the workspace is a grow-only buffer. Bias and ReLU are the caller's (our
// epilogue kernel).
#pragma once
#include "kernels/conv.h"

namespace trick {
namespace cuda {

// What cuDNN can describe: symmetric padding (pad_top == pad_bottom, pad_left ==
// pad_right) and int sizes (N*H*W*ld of the input side x_side and the output side y_side at
// most INT32_MAX, e.g. batch < ~1,600 at 147x147x64). Other layers run on our own kernels
// (64-bit offsets), so a large batch on --conv cudnn still runs.
bool cudnn_conv_supported(const Tensor& x_side, const Tensor& y_side, const Conv2dParams& p);

// y = conv(x, w) (no bias, no ReLU)
void cudnn_conv_forward(const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y);
// dx (+)= dgrad(dy, w)
void cudnn_conv_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);
// dw (+)= wgrad(x, dy)
void cudnn_conv_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, bool accumulate);

}  // namespace cuda
}  // namespace trick
