// The attack's update and projection steps, elementwise on one image's pixels.
//
//   x, x0, g, m, v:  same shape, contiguous; x the current image, x0 the original,
//                    g the loss gradient, m/v optimiser moments
//
// All keep x inside [0, 1] (adam_step when asked); the projections also keep it inside the
// eps-ball around x0.
#pragma once
#include "tensor/tensor.h"

namespace trick {

// x -= alpha * sign(g)       (FGSM, BIM, PGD-Linf; MI-FGSM with g = the momentum)
void sign_step(Tensor& x, const Tensor& g, float alpha);
// m = mu * m + g * scale      (MI-FGSM's accumulation with scale = 1 / ||g||_1)
void momentum_accumulate(Tensor& m, const Tensor& g, float mu, float scale);
// Adam, step t >= 1 (bias-corrected):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  x -= lr * m^ / (sqrt(v^) + eps)
// then x is clamped into [0, 1] when pixels (false for an unbounded variable, e.g. cw's w).
void adam_step(Tensor& x, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, int t,
               bool pixels);
// x = clamp(x, max(x0 - eps, 0), min(x0 + eps, 1))
void project_linf(Tensor& x, const Tensor& x0, float eps);
// delta = x - x0 scaled down to ||delta||_2 <= eps if longer, then x = clamp(x0 + delta, 0, 1).
void project_l2(Tensor& x, const Tensor& x0, float eps);
// x = round(clamp(x, 0, 1) * 255) / 255: the image as it will be saved (NaN -> 0).
void round_to_8bit(Tensor& x);

namespace cpu {
void sign_step(Tensor& x, const Tensor& g, float alpha);
void momentum_accumulate(Tensor& m, const Tensor& g, float mu, float scale);
void adam_step(Tensor& x, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, int t,
               bool pixels);
void project_linf(Tensor& x, const Tensor& x0, float eps);
void project_l2(Tensor& x, const Tensor& x0, float eps);
void round_to_8bit(Tensor& x);
}  // namespace cpu
namespace cuda {
void sign_step(Tensor& x, const Tensor& g, float alpha);
void momentum_accumulate(Tensor& m, const Tensor& g, float mu, float scale);
void adam_step(Tensor& x, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, int t,
               bool pixels);
void project_linf(Tensor& x, const Tensor& x0, float eps);
void project_l2(Tensor& x, const Tensor& x0, float eps);
void round_to_8bit(Tensor& x);
}  // namespace cuda

}  // namespace trick
