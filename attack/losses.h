// Losses specific to attacks.
#pragma once
#include "autograd/var.h"

namespace trick {

// Carlini-Wagner's margin on logits z (N, K), per item (N):
//   targeted:   max(max_{j != t} z_j - z_t, -kappa)   (<= -kappa once t leads by kappa)
//   untargeted: max(z_t - max_{j != t} z_j, -kappa)   (t: the true class)
// targets (N): class indices as floats. Its gradient is +-1 on the two logits involved, 0
// where the margin is met.
Var margin_loss(const Var& logits, const Tensor& targets, float kappa, bool targeted);

}  // namespace trick
