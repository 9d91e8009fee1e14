// Resize + crop: Pillow's bilinear tables and the differentiable op built on kernels/resample.h.
#include "layers/resize.h"

#include "autograd/profile.h"
#include <algorithm>
#include <cmath>
#include <vector>

namespace trick {

namespace {

double tent(double x) {  // Pillow's bilinear_filter
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

}  // namespace

ResampleTable bilinear_resample_table(int64_t in_size, int64_t out_size, int64_t begin, int64_t count) {
  TRICK_CHECK(in_size >= 1 && out_size >= 1, "resize: sizes must be >= 1, got ", in_size, " -> ", out_size);
  TRICK_CHECK(in_size <= (1 << 20) && out_size <= (1 << 20), "resize: sizes above 2^20 are not supported (",
              in_size, " -> ", out_size, ")");
  TRICK_CHECK(begin >= 0 && count >= 1 && begin + count <= out_size, "resize: output window [", begin, ", ",
              begin + count, ") is not inside [0, ", out_size, ")");
  // Pillow's box is (0, in_size) as floats (exact here) and the arithmetic is in double.
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // the bilinear filter's support is 1
  const double ss = 1.0 / filterscale;
  std::vector<int64_t> first(count);
  std::vector<std::vector<double>> weights(count);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t o = begin + i;
    const double center = (o + 0.5) * scale;
    // (int) truncates toward zero like Pillow's cast; negatives are clipped to 0 anyway.
    const int64_t xmin = std::max<int64_t>(static_cast<int>(center - support + 0.5), 0);
    const int64_t xmax = std::min<int64_t>(static_cast<int>(center + support + 0.5), in_size);
    TRICK_CHECK(xmax > xmin, "resize: empty filter window for output ", o, " of ", in_size, " -> ", out_size);
    std::vector<double>& w = weights[i];
    w.resize(xmax - xmin);
    double ww = 0.0;
    for (int64_t x = 0; x < xmax - xmin; ++x) {
      w[x] = tent((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    if (ww != 0.0)
      for (double& v : w) v /= ww;
    first[i] = xmin;
  }
  return make_resample_table(in_size, first, weights);
}

Var resize_crop(const Var& x, int out_h, int out_w, int crop_top, int crop_left, int crop_h, int crop_w) {
  ProfileOp profile("resize_crop");
  const Tensor& xv = x.value();
  TRICK_CHECK(xv.ndim() == 4, "resize: input must be (N, H, W, C), got ", xv.shape().str());
  TRICK_CHECK(out_h >= 1 && out_w >= 1, "resize: output size ", out_h, "x", out_w, " must be positive");
  TRICK_CHECK(crop_h >= 1 && crop_w >= 1 && crop_top >= 0 && crop_left >= 0 && crop_top + crop_h <= out_h &&
                  crop_left + crop_w <= out_w,
              "resize: crop ", crop_h, "x", crop_w, " at (", crop_top, ", ", crop_left, ") is not inside the ", out_h,
              "x", out_w, " resized image");
  const int64_t n = xv.dim(0), h = xv.dim(1), w = xv.dim(2), c = xv.dim(3);
  const bool do_rows = !(out_h == h && crop_h == h);
  const bool do_cols = !(out_w == w && crop_w == w);
  if (!do_rows && !do_cols) return x;

  const Device dev = xv.device();
  ResampleTable rows, cols;
  if (do_rows) rows = bilinear_resample_table(h, out_h, crop_top, crop_h).to(dev);
  if (do_cols) cols = bilinear_resample_table(w, out_w, crop_left, crop_w).to(dev);
  // The two passes commute (up to float rounding); run first the one that leaves less
  // work for the second. Pillow runs columns first but rounds to 8 bits in between,
  // which we deliberately do not.
  bool rows_first = do_rows;
  if (do_rows && do_cols) {
    const double rows_then_cols = double(crop_h) * w * rows.taps() + double(crop_h) * crop_w * cols.taps();
    const double cols_then_rows = double(h) * crop_w * cols.taps() + double(crop_h) * crop_w * rows.taps();
    rows_first = rows_then_cols <= cols_then_rows;
  }

  Tensor mid, y;
  if (do_rows && do_cols) {
    if (rows_first) {
      mid = Tensor::empty(Shape{n, crop_h, w, c}, dev);
      resample_rows(xv, rows, mid);
      y = Tensor::empty(Shape{n, crop_h, crop_w, c}, dev);
      resample_cols(mid, cols, y);
    } else {
      mid = Tensor::empty(Shape{n, h, crop_w, c}, dev);
      resample_cols(xv, cols, mid);
      y = Tensor::empty(Shape{n, crop_h, crop_w, c}, dev);
      resample_rows(mid, rows, y);
    }
  } else if (do_rows) {
    y = Tensor::empty(Shape{n, crop_h, w, c}, dev);
    resample_rows(xv, rows, y);
  } else {
    y = Tensor::empty(Shape{n, h, crop_w, c}, dev);
    resample_cols(xv, cols, y);
  }
  if (!any_requires_grad({&x})) return Var(y);

  const Shape mid_shape = mid.defined() ? mid.shape() : Shape();
  return make_result(y, "resize_crop", {&x},
                     [rows, cols, rows_first, mid_shape](const Tensor& gy, const std::vector<VarPtr>& in) {
                       bool acc = false;
                       Tensor dx = grad_destination(*in[0], &acc);
                       const bool both = rows.entries.defined() && cols.entries.defined();
                       if (!both) {
                         if (rows.entries.defined()) resample_rows_backward(gy, rows, dx, acc);
                         else resample_cols_backward(gy, cols, dx, acc);
                         return;
                       }
                       // Backward runs the passes in reverse order.
                       Tensor dmid = Tensor::empty(mid_shape, gy.device());
                       if (rows_first) {
                         resample_cols_backward(gy, cols, dmid, false);
                         resample_rows_backward(dmid, rows, dx, acc);
                       } else {
                         resample_rows_backward(gy, rows, dmid, false);
                         resample_cols_backward(dmid, cols, dx, acc);
                       }
                     });
}

}  // namespace trick
