// Softmax, log-softmax and cross-entropy over the last dim.
//
//   logits, probs, dlogits:  (N, K) row-strided
//   targets:                 (N) class indices stored as floats (exact below 2^24)
//   losses, dlosses:         (N)
#pragma once
#include "tensor/tensor.h"

namespace trick {

void softmax(const Tensor& x, Tensor& y);
void log_softmax(const Tensor& x, Tensor& y);
// dx (+)= y * (dy - sum(dy * y)) for y = softmax(x)
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
// dx (+)= dy - exp(y) * sum(dy) for y = log_softmax(x)
void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
// losses[n] = -log softmax(logits[n])[targets[n]]; probs = softmax(logits) (kept for backward).
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs, Tensor& losses);
// dlogits[n] (+)= dlosses[n] * (probs[n] - onehot(targets[n]))
void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const Tensor& dlosses, Tensor& dlogits,
                            bool accumulate);

namespace cpu {
void softmax(const Tensor& x, Tensor& y);
void log_softmax(const Tensor& x, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs, Tensor& losses);
void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const Tensor& dlosses, Tensor& dlogits,
                            bool accumulate);
}  // namespace cpu
namespace cuda {
void softmax(const Tensor& x, Tensor& y);
void log_softmax(const Tensor& x, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate);
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs, Tensor& losses);
void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const Tensor& dlosses, Tensor& dlogits,
                            bool accumulate);
}  // namespace cuda

}  // namespace trick
