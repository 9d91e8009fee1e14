// Resize + crop of NHWC images as a differentiable op, with Pillow's antialiased bilinear
// filter (what torchvision's Resize does to PIL images), so that the model sees the same
// input as PyTorch's evaluation transform and gradients flow back to the user's pixels.
#pragma once
#include <cstdint>

#include "autograd/var.h"
#include "kernels/resample.h"

namespace trick {

// Pillow's weights (src/libImaging/Resample.c, precompute_coeffs, BILINEAR filter, whole
// image as the box) for resizing `in_size` samples to `out_size`, for the output indices
// [begin, begin + count) only. Computed in double, stored as float; host table.
//   scale = in / out, support = 1 * max(scale, 1), center = (o + 0.5) * scale,
//   inputs (int)(center - support + 0.5) .. (int)(center + support + 0.5) clipped to the
//   image, weight of input i = tent((i - center + 0.5) / max(scale, 1)), normalised to sum 1.
ResampleTable bilinear_resample_table(int64_t in_size, int64_t out_size, int64_t begin, int64_t count);

// x: (N, H, W, C) -> (N, crop_h, crop_w, C): x resized to (out_h, out_w), then the window
// of that size at (crop_top, crop_left). Only the rows and columns inside the crop are
// computed. An axis that is neither resized nor cropped is not touched; with nothing to
// do, x itself is returned.
Var resize_crop(const Var& x, int out_h, int out_w, int crop_top, int crop_left, int crop_h, int crop_w);
inline Var resize(const Var& x, int out_h, int out_w) { return resize_crop(x, out_h, out_w, 0, 0, out_h, out_w); }

}  // namespace trick
