// Softmax and cross-entropy: argument checks and dispatch.
#include "kernels/softmax.h"

#include "kernels/check.h"

namespace trick {

namespace {
void check_logits(const char* op, const char* name, const Tensor& t) {
  check_ndim(op, name, t, 2);
  check_row_strided(op, name, t);
}
void check_targets(const char* op, const Tensor& targets, const Tensor& logits) {
  check_shape(op, "targets", targets, Shape{logits.dim(0)});
  check_contiguous(op, "targets", targets);
  if (targets.device().is_cpu()) {
    const float* t = targets.data();
    for (int64_t i = 0; i < targets.numel(); ++i)
      TRICK_CHECK(t[i] >= 0 && t[i] < logits.dim(1) && t[i] == static_cast<float>(static_cast<int64_t>(t[i])), op,
                  ": target ", t[i], " of item ", i, " is not a class index in [0, ", logits.dim(1), ")");
  }
}
}  // namespace

void softmax(const Tensor& x, Tensor& y) {
  const Device dev = check_same_device("softmax", {&x, &y});
  check_logits("softmax", "input", x);
  check_same_shape("softmax", "input", x, "output", y);
  check_row_strided("softmax", "output", y);
  TRICK_DISPATCH("softmax", dev, softmax, x, y);
}

void log_softmax(const Tensor& x, Tensor& y) {
  const Device dev = check_same_device("log_softmax", {&x, &y});
  check_logits("log_softmax", "input", x);
  check_same_shape("log_softmax", "input", x, "output", y);
  check_row_strided("log_softmax", "output", y);
  TRICK_DISPATCH("log_softmax", dev, log_softmax, x, y);
}

void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("softmax_backward", {&y, &dy, &dx});
  check_logits("softmax_backward", "output", y);
  check_same_shape("softmax_backward", "output", y, "output gradient", dy);
  check_same_shape("softmax_backward", "output", y, "input gradient", dx);
  check_row_strided("softmax_backward", "output gradient", dy);
  check_row_strided("softmax_backward", "input gradient", dx);
  TRICK_DISPATCH("softmax_backward", dev, softmax_backward, y, dy, dx, accumulate);
}

void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("log_softmax_backward", {&y, &dy, &dx});
  check_logits("log_softmax_backward", "output", y);
  check_same_shape("log_softmax_backward", "output", y, "output gradient", dy);
  check_same_shape("log_softmax_backward", "output", y, "input gradient", dx);
  check_row_strided("log_softmax_backward", "output gradient", dy);
  check_row_strided("log_softmax_backward", "input gradient", dx);
  TRICK_DISPATCH("log_softmax_backward", dev, log_softmax_backward, y, dy, dx, accumulate);
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs, Tensor& losses) {
  const Device dev = check_same_device("cross_entropy", {&logits, &targets, &probs, &losses});
  check_logits("cross_entropy", "logits", logits);
  check_targets("cross_entropy", targets, logits);
  check_same_shape("cross_entropy", "logits", logits, "probabilities", probs);
  check_row_strided("cross_entropy", "probabilities", probs);
  check_shape("cross_entropy", "losses", losses, Shape{logits.dim(0)});
  check_contiguous("cross_entropy", "losses", losses);  // the kernels index it by row
  TRICK_DISPATCH("cross_entropy", dev, cross_entropy_forward, logits, targets, probs, losses);
}

void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const Tensor& dlosses, Tensor& dlogits,
                            bool accumulate) {
  const Device dev = check_same_device("cross_entropy_backward", {&probs, &targets, &dlosses, &dlogits});
  check_logits("cross_entropy_backward", "probabilities", probs);
  check_targets("cross_entropy_backward", targets, probs);
  check_shape("cross_entropy_backward", "loss gradient", dlosses, Shape{probs.dim(0)});
  check_contiguous("cross_entropy_backward", "loss gradient", dlosses);
  check_same_shape("cross_entropy_backward", "probabilities", probs, "logit gradient", dlogits);
  check_row_strided("cross_entropy_backward", "logit gradient", dlogits);
  TRICK_DISPATCH("cross_entropy_backward", dev, cross_entropy_backward, probs, targets, dlosses, dlogits,
                 accumulate);
}

}  // namespace trick
