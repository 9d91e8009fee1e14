// The attack's update steps: argument checks and dispatch.
#include "kernels/attack.h"

#include "kernels/check.h"

namespace trick {

namespace {
void check_like(const char* op, const char* name, const Tensor& t, const Tensor& x) {
  check_contiguous(op, name, t);
  check_same_shape(op, "image", x, name, t);
}
}  // namespace

void sign_step(Tensor& x, const Tensor& g, float alpha) {
  const Device dev = check_same_device("sign_step", {&x, &g});
  check_contiguous("sign_step", "image", x);
  check_like("sign_step", "gradient", g, x);
  TRICK_DISPATCH("sign_step", dev, sign_step, x, g, alpha);
}

void momentum_accumulate(Tensor& m, const Tensor& g, float mu, float scale) {
  const Device dev = check_same_device("momentum_accumulate", {&m, &g});
  check_contiguous("momentum_accumulate", "momentum", m);
  check_like("momentum_accumulate", "gradient", g, m);
  TRICK_DISPATCH("momentum_accumulate", dev, momentum_accumulate, m, g, mu, scale);
}

void adam_step(Tensor& x, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, int t,
               bool pixels) {
  const Device dev = check_same_device("adam_step", {&x, &g, &m, &v});
  check_contiguous("adam_step", "image", x);
  check_like("adam_step", "gradient", g, x);
  check_like("adam_step", "first moment", m, x);
  check_like("adam_step", "second moment", v, x);
  TRICK_CHECK(t >= 1, "adam_step: step ", t, " must be >= 1");
  TRICK_DISPATCH("adam_step", dev, adam_step, x, g, m, v, lr, b1, b2, eps, t, pixels);
}

void project_linf(Tensor& x, const Tensor& x0, float eps) {
  const Device dev = check_same_device("project_linf", {&x, &x0});
  check_contiguous("project_linf", "image", x);
  check_like("project_linf", "original", x0, x);
  TRICK_CHECK(eps >= 0.f, "project_linf: eps ", eps, " < 0");
  TRICK_DISPATCH("project_linf", dev, project_linf, x, x0, eps);
}

void project_l2(Tensor& x, const Tensor& x0, float eps) {
  const Device dev = check_same_device("project_l2", {&x, &x0});
  check_contiguous("project_l2", "image", x);
  check_like("project_l2", "original", x0, x);
  TRICK_CHECK(eps >= 0.f, "project_l2: eps ", eps, " < 0");
  TRICK_DISPATCH("project_l2", dev, project_l2, x, x0, eps);
}

void round_to_8bit(Tensor& x) {
  const Device dev = check_same_device("round_to_8bit", {&x});
  check_contiguous("round_to_8bit", "image", x);
  TRICK_DISPATCH("round_to_8bit", dev, round_to_8bit, x);
}

}  // namespace trick
