// Differentiable ops: each checks its arguments, runs the kernel, and (when a gradient is
// wanted) records a backward closure that keeps only what the backward needs and computes
// only the gradients of inputs that require one.
//
// Shapes follow kernels/: activations NHWC (N, H, W, C), conv weights (O, KH, KW, C).
// Ops that accept `out` write their result into that preallocated tensor (typically a
// channel slice of an Inception block's output), which makes the block's concat free.
#pragma once
#include <vector>

#include "autograd/var.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "tensor/random.h"

namespace trick {

// y = relu?(conv(x, w) + b); b may be an undefined Var. Frozen w (requires_grad false)
// means dgrad only: no weight gradient is ever computed.
Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dParams& p, Tensor out = Tensor());
Var relu(const Var& x);
Var max_pool2d(const Var& x, const Pool2dParams& p, Tensor out = Tensor());
Var avg_pool2d(const Var& x, const Pool2dParams& p, Tensor out = Tensor());
Var global_avg_pool(const Var& x);  // (N, H, W, C) -> (N, C)
// y(N, O) = x(N, I) * w(O, I)^T + b(O)
Var linear(const Var& x, const Var& w, const Var& b);
// Training-mode batch norm: batch statistics; updates running_mean/var in place.
Var batch_norm_train(const Var& x, const Var& gamma, const Var& beta, Tensor& running_mean, Tensor& running_var,
                     float eps, float momentum);
// y = x * scale + shift per channel (then ReLU): batch norm in evaluation mode. Gradient for x only.
Var channel_affine(const Var& x, const Tensor& scale, const Tensor& shift, bool relu);
// Concatenation along the last dim. concat_into writes into `out` (N, ..., sum of C):
// parts already computed in place in their slice of `out` are not copied.
Var concat(const std::vector<Var>& parts);
Var concat_into(const std::vector<Var>& parts, Tensor out);
// Stacks batches along the first dim: parts (n_i, ...) with equal trailing dims -> (sum n_i, ...).
Var concat_batch(const std::vector<Var>& parts);

Var softmax(const Var& x);      // (N, K)
Var log_softmax(const Var& x);  // (N, K)
// Per-item loss (N): -log softmax(logits)[target]; targets (N) class indices as floats.
Var cross_entropy(const Var& logits, const Tensor& targets);

Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var affine(const Var& x, float a, float b);  // a * x + b
Var clamp(const Var& x, float lo, float hi);
Var tanh(const Var& x);
Var sign(const Var& x);  // piecewise constant: its gradient is zero, so the result needs none
Var sum(const Var& x);   // -> (1)
Var mean(const Var& x);  // -> (1)
Var max(const Var& x);   // -> (1); the gradient goes to the first maximum
Var reshape(const Var& x, const Shape& shape);
// Inverted dropout: zeroes each value with probability p and scales the rest by 1/(1-p).
Var dropout(const Var& x, float p, Rng& rng, bool training);

}  // namespace trick
