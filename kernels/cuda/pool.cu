// CUDA pooling, NHWC: one thread per (pixel, channel), the channel fastest so a warp reads
// consecutive floats. Backward passes gather over the outputs whose window holds an input
// pixel (kernels/cuda/pool_geometry.h) instead of scattering, so they need no atomics, no
// separate zeroing pass and add in the CPU twin's order.
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/pool_geometry.h"
#include "kernels/pool.h"

namespace trick {
namespace cuda {

namespace {

PoolGeometry geometry(const Tensor& x, const Tensor& y, const Pool2dParams& p) {
  const char* op = "pool";
  check_fits_int(op, "input rows", x.rows());
  check_fits_int(op, "output rows", y.rows());
  PoolGeometry g;
  g.h = static_cast<int>(x.dim(1)), g.w = static_cast<int>(x.dim(2));
  g.oh = static_cast<int>(y.dim(1)), g.ow = static_cast<int>(y.dim(2));
  g.kh = p.kernel_h, g.kw = p.kernel_w, g.sh = p.stride_h, g.sw = p.stride_w;
  g.pt = p.pad_top, g.pb = p.pad_bottom, g.pl = p.pad_left, g.pr = p.pad_right;
  g.count_include_pad = p.count_include_pad;
  return g;
}

// Pixel index (b, py, px) of an (N, PH, PW) grid from its row number.
struct PixelIndex {
  FastDiv pw, ph;
  PixelIndex(int ph_, int pw_)
      : pw(static_cast<uint32_t>(pw_ > 0 ? pw_ : 1)), ph(static_cast<uint32_t>(ph_ > 0 ? ph_ : 1)) {}
  __device__ __forceinline__ void split(uint32_t row, int& b, int& py, int& px) const {
    uint32_t t, x, bb, y;
    pw.divmod(row, t, x);
    ph.divmod(t, bb, y);
    b = static_cast<int>(bb), py = static_cast<int>(y), px = static_cast<int>(x);
  }
};

struct MaxForward {
  ConstRowView x;
  RowView y;
  PoolGeometry g;
  PixelIndex out;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    int b, oy, ox;
    out.split(r, b, oy, ox);
    const PoolWindow win = pool_window(g, oy, ox);
    float m = -INFINITY;
    for (int iy = win.y0; iy < win.y1; ++iy)
      for (int ix = win.x0; ix < win.x1; ++ix) {
        const float v = x.at((static_cast<int64_t>(b) * g.h + iy) * g.w + ix, c);
        m = (v > m || v != v) ? v : m;
      }
    y.at(r, c) = m;
  }
};

struct AvgForward {
  ConstRowView x;
  RowView y;
  PoolGeometry g;
  PixelIndex out;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    int b, oy, ox;
    out.split(r, b, oy, ox);
    const PoolWindow win = pool_window(g, oy, ox);
    float s = 0.f;
    for (int iy = win.y0; iy < win.y1; ++iy)
      for (int ix = win.x0; ix < win.x1; ++ix) s += x.at((static_cast<int64_t>(b) * g.h + iy) * g.w + ix, c);
    y.at(r, c) = s * (win.area > 0 ? 1.f / static_cast<float>(win.area) : 0.f);
  }
};

// dx[pixel] = sum of dy over the windows whose first maximum (row-major, the value equal
// to the saved output, or the first NaN when the output is NaN) is this pixel. The pixel
// is that first maximum when it equals the window's output and no position before it in
// the window does: one compare per window, and a scan of the earlier positions only for
// the windows it ties.
struct MaxBackward {
  ConstRowView x, y, dy;
  RowView dx;
  PoolGeometry g;
  PixelIndex in;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    int b, iy, ix;
    in.split(r, b, iy, ix);
    int oy0, oy1, ox0, ox1;
    pool_outputs_of(iy, g.kh, g.sh, g.pt, g.oh, oy0, oy1);
    pool_outputs_of(ix, g.kw, g.sw, g.pl, g.ow, ox0, ox1);
    const float v = x.at(r, c);
    float acc = accumulate ? dx.at(r, c) : 0.f;
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        const int64_t orow = (static_cast<int64_t>(b) * g.oh + oy) * g.ow + ox;
        const float m = y.at(orow, c);
        const bool nan = m != m;
        if (!(v == m || (nan && v != v))) continue;
        const PoolWindow win = pool_window(g, oy, ox);
        bool earlier = false;  // a maximum before (iy, ix) in the window's row-major order
        for (int jy = win.y0; jy <= iy && !earlier; ++jy) {
          const int x1 = jy == iy ? ix : win.x1;
          for (int jx = win.x0; jx < x1; ++jx) {
            const float u = x.at((static_cast<int64_t>(b) * g.h + jy) * g.w + jx, c);
            if (u == m || (nan && u != u)) {
              earlier = true;
              break;
            }
          }
        }
        if (!earlier) acc += dy.at(orow, c);
      }
    dx.at(r, c) = acc;
  }
};

struct AvgBackward {
  ConstRowView dy;
  RowView dx;
  PoolGeometry g;
  PixelIndex in;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    int b, iy, ix;
    in.split(r, b, iy, ix);
    int oy0, oy1, ox0, ox1;
    pool_outputs_of(iy, g.kh, g.sh, g.pt, g.oh, oy0, oy1);
    pool_outputs_of(ix, g.kw, g.sw, g.pl, g.ow, ox0, ox1);
    float acc = accumulate ? dx.at(r, c) : 0.f;
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        const PoolWindow win = pool_window(g, oy, ox);
        const float inv = win.area > 0 ? 1.f / static_cast<float>(win.area) : 0.f;
        acc += dy.at((static_cast<int64_t>(b) * g.oh + oy) * g.ow + ox, c) * inv;
      }
    dx.at(r, c) = acc;
  }
};

struct GlobalAvgForward {
  ConstRowView x;
  RowView y;
  int hw;
  __device__ void operator()(uint32_t b, uint32_t c) const {
    double s = 0.0;  // the CPU twin's accumulator, in its order
    for (int i = 0; i < hw; ++i) s += x.at(static_cast<int64_t>(b) * hw + i, c);
    y.at(b, c) = static_cast<float>(s) * (hw ? 1.f / static_cast<float>(hw) : 0.f);
  }
};

struct GlobalAvgBackward {
  ConstRowView dy;
  RowView dx;
  FastDiv hw;
  float inv;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float v = dy.at(hw.div(r), c) * inv;
    float& o = dx.at(r, c);
    o = accumulate ? o + v : v;
  }
};

}  // namespace

void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  DeviceGuard guard(x.device());
  const PoolGeometry g = geometry(x, y, p);
  launch_map("max_pool2d", y.rows(), y.cols(), MaxForward{cview(x), view(y), g, PixelIndex(g.oh, g.ow)});
}

void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate) {
  DeviceGuard guard(x.device());
  const PoolGeometry g = geometry(x, y, p);
  launch_map("max_pool2d_backward", dx.rows(), dx.cols(),
             MaxBackward{cview(x), cview(y), cview(dy), view(dx), g, PixelIndex(g.h, g.w), accumulate});
}

void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  DeviceGuard guard(x.device());
  const PoolGeometry g = geometry(x, y, p);
  launch_map("avg_pool2d", y.rows(), y.cols(), AvgForward{cview(x), view(y), g, PixelIndex(g.oh, g.ow)});
}

void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate) {
  DeviceGuard guard(dy.device());
  const PoolGeometry g = geometry(dx, dy, p);
  launch_map("avg_pool2d_backward", dx.rows(), dx.cols(),
             AvgBackward{cview(dy), view(dx), g, PixelIndex(g.h, g.w), accumulate});
}

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  DeviceGuard guard(x.device());
  const int64_t hw = x.dim(1) * x.dim(2);
  check_fits_int("global_avg_pool", "input rows", x.rows());
  launch_map("global_avg_pool", y.rows(), y.cols(), GlobalAvgForward{cview(x), view(y), static_cast<int>(hw)});
}

void global_avg_pool_backward(const Tensor& dy, Tensor& dx, bool accumulate) {
  DeviceGuard guard(dy.device());
  const int64_t hw = dx.dim(1) * dx.dim(2);
  check_fits_int("global_avg_pool_backward", "input rows", dx.rows());
  const float inv = hw ? 1.f / static_cast<float>(hw) : 0.f;
  launch_map("global_avg_pool_backward", dx.rows(), dx.cols(),
             GlobalAvgBackward{cview(dy), view(dx), FastDiv(static_cast<uint32_t>(hw > 0 ? hw : 1)), inv, accumulate});
}

}  // namespace cuda
}  // namespace trick
