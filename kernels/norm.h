// Batch normalisation, NHWC (statistics per channel, over every row N*H*W).
//
//   x, y, dy, dx:            (N, H, W, C) or (N, C), row-strided
//   gamma, beta, running_*:  (C)
//   save_mean, save_invstd:  (C) written by the training forward, read by backward
//
// Training mode uses the batch statistics and updates the running averages as PyTorch
// does (running_var gets the unbiased variance). Evaluation mode is a per-channel affine
// y = x * scale + shift (BN folded), optionally followed by ReLU.
#pragma once
#include "tensor/tensor.h"

namespace trick {

void batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                              float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y,
                              Tensor& save_mean, Tensor& save_invstd);
// Any of dx, dgamma, dbeta may be undefined (not wanted). dx accumulates when accumulate_x.
void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, Tensor& dx, bool accumulate_x, Tensor& dgamma,
                         Tensor& dbeta, bool accumulate_params);
// y = x * scale + shift per channel (then max(0, .) when relu).
void channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift, bool relu, Tensor& y);

namespace cpu {
void batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                              float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y,
                              Tensor& save_mean, Tensor& save_invstd);
void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, Tensor& dx, bool accumulate_x, Tensor& dgamma,
                         Tensor& dbeta, bool accumulate_params);
void channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift, bool relu, Tensor& y);
}  // namespace cpu
namespace cuda {
void batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps,
                              float momentum, Tensor& running_mean, Tensor& running_var, Tensor& y,
                              Tensor& save_mean, Tensor& save_invstd);
void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, Tensor& dx, bool accumulate_x, Tensor& dgamma,
                         Tensor& dbeta, bool accumulate_params);
void channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift, bool relu, Tensor& y);
}  // namespace cuda

}  // namespace trick
