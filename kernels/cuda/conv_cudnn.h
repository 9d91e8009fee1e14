// The cuDNN v9 convolution backend (legacy convolution API), used by kernels/cuda/conv.cu
// when conv_backend() is Cudnn. Tensors are described as NHWC with their real row stride
// (cudnnSetTensor4dDescriptorEx), so channel slices are passed in place; when cuDNN
// refuses a strided layout the data goes through packed copies instead. Per shape the
// algorithm (cudnnGet*Algorithm_v7, the first one cuDNN ranks that fits the math mode
// and a 1 GiB workspace) and its descriptors are chosen once and cached; the workspace is
// a grow-only buffer. Bias and ReLU are the caller's (our epilogue kernel).
#pragma once
#include "kernels/conv.h"

namespace trick {
namespace cuda {

// cuDNN pads symmetrically: layers with pad_top != pad_bottom or pad_left != pad_right
// are not expressible and stay on our own kernels.
bool cudnn_conv_supported(const Conv2dParams& p);

// y = conv(x, w) (no bias, no ReLU)
void cudnn_conv_forward(const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y);
// dx (+)= dgrad(dy, w)
void cudnn_conv_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate);
// dw (+)= wgrad(x, dy)
void cudnn_conv_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, bool accumulate);

}  // namespace cuda
}  // namespace trick
