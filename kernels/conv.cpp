// conv2d: argument checks and dispatch to the CPU or CUDA implementation.
#include "kernels/conv.h"

#include "kernels/check.h"
#include "kernels/cpu/tensor_core_emulation.h"
#include "kernels/reduce.h"
#include "kernels/tensor_core_rounding.h"

namespace trick {

ConvCallCounts& conv_call_counts() {
  static ConvCallCounts counts;
  return counts;
}

namespace {
std::string where(const Conv2dParams& p) { return p.name.empty() ? std::string() : cat(" (", p.name, ")"); }
}  // namespace

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p) {
  TRICK_CHECK(x.ndim == 4, "conv2d: input must be (N, H, W, C), got ", x.str(), where(p));
  TRICK_CHECK(w.ndim == 4, "conv2d: weight must be (O, KH, KW, C), got ", w.str(), where(p));
  TRICK_CHECK(x[3] == w[3], "conv2d: input ", x.str(), " has ", x[3], " channels, weight ", w.str(), " expects ",
              w[3], where(p));
  TRICK_CHECK(p.stride_h >= 1 && p.stride_w >= 1 && p.pad_top >= 0 && p.pad_bottom >= 0 && p.pad_left >= 0 &&
                  p.pad_right >= 0,
              "conv2d: strides must be >= 1 and padding >= 0", where(p));
  const int64_t hp = x[1] + p.pad_top + p.pad_bottom, wp = x[2] + p.pad_left + p.pad_right;
  TRICK_CHECK(hp >= w[1] && wp >= w[2], "conv2d: input ", x.str(), " is smaller than the kernel ", w[1], "x", w[2],
              " with its padding", where(p));
  return Shape{x[0], (hp - w[1]) / p.stride_h + 1, (wp - w[2]) / p.stride_w + 1, w[0]};
}

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) {
  const Device dev = check_same_device("conv2d", {&x, &w, &b, &y});
  check_row_strided("conv2d", "input", x);
  check_contiguous("conv2d", "weight", w);
  check_row_strided("conv2d", "output", y);
  const Shape ys = conv2d_output_shape(x.shape(), w.shape(), p);
  TRICK_CHECK(y.shape() == ys, "conv2d: output has shape ", y.shape().str(), ", expected ", ys.str(), where(p));
  if (b.defined()) check_shape("conv2d", "bias", b, Shape{w.dim(0)});
  ++conv_call_counts().forward;
  const MathMode m = math_mode();
  if (dev.is_cpu() && m != MathMode::FP32)  // emulated (kernels/cpu/tensor_core_emulation.h)
    return cpu::conv2d_forward(cpu::tensor_core_rounded(x, m), cpu::tensor_core_rounded_weights(w, m), b, p, y);
  TRICK_DISPATCH("conv2d", dev, conv2d_forward, x, w, b, p, y);
}

void conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("conv2d_dgrad", {&dy, &w, &dx});
  check_row_strided("conv2d_dgrad", "output gradient", dy);
  check_contiguous("conv2d_dgrad", "weight", w);
  check_row_strided("conv2d_dgrad", "input gradient", dx);
  const Shape ys = conv2d_output_shape(dx.shape(), w.shape(), p);
  TRICK_CHECK(dy.shape() == ys, "conv2d_dgrad: output gradient has shape ", dy.shape().str(), ", expected ",
              ys.str(), where(p));
  ++conv_call_counts().dgrad;
  const MathMode m = math_mode();
  // The first layer's data gradient stays fp32 on the GPU in every mode (small_c_dgrad), so here.
  if (dev.is_cpu() && m != MathMode::FP32 &&
      !small_c_dgrad(w.dim(3), w.numel(), conv2d_pointwise(w.dim(1), w.dim(2), p)))
    return cpu::conv2d_dgrad(cpu::tensor_core_rounded(dy, m), cpu::tensor_core_rounded_weights(w, m), p, dx,
                             accumulate);
  TRICK_DISPATCH("conv2d_dgrad", dev, conv2d_dgrad, dy, w, p, dx, accumulate);
}

void conv2d_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, Tensor& db,
                  bool accumulate) {
  const Device dev = check_same_device("conv2d_wgrad", {&x, &dy, &dw, &db});
  check_row_strided("conv2d_wgrad", "input", x);
  check_row_strided("conv2d_wgrad", "output gradient", dy);
  check_contiguous("conv2d_wgrad", "weight gradient", dw);
  const Shape ys = conv2d_output_shape(x.shape(), dw.shape(), p);
  TRICK_CHECK(dy.shape() == ys, "conv2d_wgrad: output gradient has shape ", dy.shape().str(), ", expected ",
              ys.str(), where(p));
  if (db.defined()) check_shape("conv2d_wgrad", "bias gradient", db, Shape{dw.dim(0)});
  ++conv_call_counts().wgrad;
  const MathMode m = math_mode();
  if (dev.is_cpu() && m != MathMode::FP32) {
    Tensor no_db;
    cpu::conv2d_wgrad(cpu::tensor_core_rounded(x, m), cpu::tensor_core_rounded(dy, m), p, dw, no_db, accumulate);
    // db is a sum, not a product: fp32 from the unrounded dy, as on the GPU (cuda::sum_rows).
    if (db.defined()) cpu::sum_rows(dy, db, accumulate);
    return;
  }
  TRICK_DISPATCH("conv2d_wgrad", dev, conv2d_wgrad, x, dy, p, dw, db, accumulate);
}

}  // namespace trick
