// Index math of 2-D pooling windows, shared by the CUDA kernels and the host tests:
// the (clipped) window of an output pixel, exactly as kernels/cpu/pool.cpp computes it,
// and its inverse, the range of outputs whose window holds a given input pixel (what a
// gather-style backward needs).
#pragma once
#include "kernels/cuda/fast_div.h"

namespace trick {
namespace cuda {

struct PoolGeometry {
  int h, w, oh, ow;    // input and output sizes
  int kh, kw, sh, sw;  // window and stride
  int pt, pb, pl, pr;  // padding
  bool count_include_pad;
};

struct PoolWindow {
  int y0, y1, x0, x1;  // [y0, y1) x [x0, x1), clipped to the image
  int area;            // the average pool's divisor
};

TRICK_HD int floor_div(int a, int b) {  // b > 0
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}
TRICK_HD int imin(int a, int b) { return a < b ? a : b; }
TRICK_HD int imax(int a, int b) { return a > b ? a : b; }

TRICK_HD PoolWindow pool_window(const PoolGeometry& g, int oy, int ox) {
  const int ys = oy * g.sh - g.pt, xs = ox * g.sw - g.pl;
  const int ye = imin(ys + g.kh, g.h + g.pb), xe = imin(xs + g.kw, g.w + g.pr);
  PoolWindow win;
  win.y0 = imax(ys, 0), win.x0 = imax(xs, 0);
  win.y1 = imin(ye, g.h), win.x1 = imin(xe, g.w);
  win.area = g.count_include_pad ? (ye - ys) * (xe - xs) : (win.y1 - win.y0) * (win.x1 - win.x0);
  return win;
}

// Outputs o in [lo, hi] (inclusive; empty when lo > hi) whose window along one axis
// contains input index i: o * s - p <= i < o * s - p + k, with 0 <= i < size, so the
// clipping of the window to [0, size + p_end) never excludes i.
TRICK_HD void pool_outputs_of(int i, int k, int s, int p, int out, int& lo, int& hi) {
  lo = imax(0, floor_div(i + p - k, s) + 1);
  hi = imin(out - 1, floor_div(i + p, s));
}

}  // namespace cuda
}  // namespace trick
