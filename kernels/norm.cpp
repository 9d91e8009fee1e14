// Batch norm: argument checks and dispatch.
#include "kernels/norm.h"

#include "kernels/check.h"

namespace trick {

namespace {
void check_channels(const char* op, const char* name, const Tensor& t, int64_t c) {
  check_shape(op, name, t, Shape{c});
  check_contiguous(op, name, t);
}
void check_activation(const char* op, const char* name, const Tensor& t) {
  check_row_strided(op, name, t);
  TRICK_CHECK(t.ndim() == 4 || t.ndim() == 2, op, ": ", name, " must be (N, H, W, C) or (N, C), got ",
              t.shape().str());
}
}  // namespace

void batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, float momentum,
                              Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                              Tensor& save_invstd) {
  const char* op = "batch_norm";
  const Device dev =
      check_same_device(op, {&x, &gamma, &beta, &running_mean, &running_var, &y, &save_mean, &save_invstd});
  check_activation(op, "input", x);
  check_same_shape(op, "input", x, "output", y);
  check_row_strided(op, "output", y);
  const int64_t c = x.cols();
  TRICK_CHECK(x.rows() > 1, op, ": training needs more than one value per channel, input has shape ",
              x.shape().str());
  for (auto [name, t] : {std::pair<const char*, const Tensor*>{"gamma", &gamma}, {"beta", &beta},
                         {"running_mean", &running_mean}, {"running_var", &running_var},
                         {"save_mean", &save_mean}, {"save_invstd", &save_invstd}})
    check_channels(op, name, *t, c);
  TRICK_CHECK(eps > 0.f && momentum >= 0.f && momentum <= 1.f, op, ": eps must be > 0 and momentum in [0, 1]");
  TRICK_DISPATCH(op, dev, batch_norm_train_forward, x, gamma, beta, eps, momentum, running_mean, running_var, y,
                 save_mean, save_invstd);
}

void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, Tensor& dx, bool accumulate_x, Tensor& dgamma, Tensor& dbeta,
                         bool accumulate_params) {
  const char* op = "batch_norm_backward";
  const Device dev = check_same_device(op, {&x, &dy, &gamma, &save_mean, &save_invstd, &dx, &dgamma, &dbeta});
  check_activation(op, "input", x);
  check_same_shape(op, "input", x, "output gradient", dy);
  check_row_strided(op, "output gradient", dy);
  const int64_t c = x.cols();
  check_channels(op, "gamma", gamma, c);
  check_channels(op, "save_mean", save_mean, c);
  check_channels(op, "save_invstd", save_invstd, c);
  if (dx.defined()) {
    check_same_shape(op, "input", x, "input gradient", dx);
    check_row_strided(op, "input gradient", dx);
  }
  if (dgamma.defined()) check_channels(op, "gamma gradient", dgamma, c);
  if (dbeta.defined()) check_channels(op, "beta gradient", dbeta, c);
  TRICK_DISPATCH(op, dev, batch_norm_backward, x, dy, gamma, save_mean, save_invstd, dx, accumulate_x, dgamma,
                 dbeta, accumulate_params);
}

void channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift, bool relu, Tensor& y) {
  const char* op = "channel_affine";
  const Device dev = check_same_device(op, {&x, &scale, &shift, &y});
  check_row_strided(op, "input", x);
  check_same_shape(op, "input", x, "output", y);
  check_row_strided(op, "output", y);
  check_channels(op, "scale", scale, x.cols());
  check_channels(op, "shift", shift, x.cols());
  TRICK_DISPATCH(op, dev, channel_affine, x, scale, shift, relu, y);
}

}  // namespace trick
