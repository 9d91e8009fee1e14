#include "attack/losses.h"

#include <cmath>
#include <vector>

#include "kernels/check.h"
#include "kernels/pointwise.h"

namespace trick {

Var margin_loss(const Var& logits, const Tensor& targets, float kappa, bool targeted) {
  const Tensor& z = logits.value();
  check_ndim("margin_loss", "logits", z, 2);
  check_shape("margin_loss", "targets", targets, Shape{z.dim(0)});
  const int64_t n = z.dim(0), k = z.dim(1);
  TRICK_CHECK(k >= 2, "margin_loss: needs at least 2 classes, got ", k);
  // Small (N x K) and off the hot path of the sign methods: computed on the host.
  const std::vector<float> zv = z.to_vector(), tv = targets.to_vector();
  std::vector<float> loss(n);
  std::vector<int64_t> hi(n), lo(n);  // the logit with + and with - sign in the margin
  std::vector<bool> active(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = static_cast<int64_t>(tv[i]);
    TRICK_CHECK(t >= 0 && t < k, "margin_loss: target ", tv[i], " of item ", i, " is not a class index");
    int64_t other = t == 0 ? 1 : 0;
    for (int64_t j = 0; j < k; ++j)
      if (j != t && zv[i * k + j] > zv[i * k + other]) other = j;
    hi[i] = targeted ? other : t;
    lo[i] = targeted ? t : other;
    const float m = zv[i * k + hi[i]] - zv[i * k + lo[i]];
    active[i] = m > -kappa;
    loss[i] = active[i] ? m : -kappa;
  }
  Tensor out = Tensor::from_vector(Shape{n}, loss).to(z.device());
  return make_result(out, "margin_loss", {&logits},
                     [hi, lo, active, n, k](const Tensor& gy, const std::vector<VarPtr>& in) {
                       const std::vector<float> g = gy.to_vector();
                       std::vector<float> d(static_cast<size_t>(n * k), 0.f);
                       for (int64_t i = 0; i < n; ++i)
                         if (active[i]) d[i * k + hi[i]] += g[i], d[i * k + lo[i]] -= g[i];
                       accumulate_grad(*in[0], Tensor::from_vector(Shape{n, k}, d).to(gy.device()), true);
                     });
}

}  // namespace trick
