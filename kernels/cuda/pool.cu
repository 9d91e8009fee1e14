// CUDA pooling, NHWC: one thread per (pixel, channel), or per (pixel, four channels) as one
// float4 where the views allow, the channels fastest so a warp reads consecutive floats. Backward passes gather over
// the outputs whose window holds an input pixel (kernels/cuda/pool_geometry.h) instead of scattering, so they need no
// atomics, no separate zeroing pass and add in the CPU twin's order.
#include <initializer_list>

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

// V consecutive channels of one pixel: a thread handles V = 4 with one float4 load or
// store where every view allows it (pool_width), which divides the index math (the
// pixel's coordinates and its windows) by four; V = 1 otherwise. Same order of adds.
template <int V>
struct Pack {
  float v[V];
};
template <int V>
__device__ __forceinline__ Pack<V> load(const float* p) {
  Pack<V> r;
  if constexpr (V == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    r.v[0] = t.x, r.v[1] = t.y, r.v[2] = t.z, r.v[3] = t.w;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = p[k];
  }
  return r;
}
template <int V>
__device__ __forceinline__ void store(float* p, const Pack<V>& r) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = r.v[k];
  }
}
__device__ __forceinline__ const float* at(const ConstRowView& t, int64_t r, int c) { return t.p + r * t.ld + c; }
__device__ __forceinline__ float* at(const RowView& t, int64_t r, int c) { return t.p + r * t.ld + c; }
// A backward pass's starting sums: dx as it is when accumulating, else zeros.
template <int V>
__device__ __forceinline__ Pack<V> start(const RowView& dx, int64_t r, int c, bool accumulate) {
  Pack<V> acc;
  if (accumulate) return load<V>(at(dx, r, c));
#pragma unroll
  for (int k = 0; k < V; ++k) acc.v[k] = 0.f;
  return acc;
}

template <int V>
struct MaxForward {
  ConstRowView x;
  RowView y;
  PoolGeometry g;
  PixelIndex out;
  __device__ void operator()(uint32_t r, uint32_t cv) const {
    const int c = static_cast<int>(cv) * V;
    int b, oy, ox;
    out.split(r, b, oy, ox);
    const PoolWindow win = pool_window(g, oy, ox);
    Pack<V> m;
#pragma unroll
    for (int k = 0; k < V; ++k) m.v[k] = -INFINITY;
    for (int iy = win.y0; iy < win.y1; ++iy)
      for (int ix = win.x0; ix < win.x1; ++ix) {
        const Pack<V> v = load<V>(at(x, (static_cast<int64_t>(b) * g.h + iy) * g.w + ix, c));
#pragma unroll
        for (int k = 0; k < V; ++k) m.v[k] = (v.v[k] > m.v[k] || v.v[k] != v.v[k]) ? v.v[k] : m.v[k];
      }
    store<V>(at(y, r, c), m);
  }
};

template <int V>
struct AvgForward {
  ConstRowView x;
  RowView y;
  PoolGeometry g;
  PixelIndex out;
  __device__ void operator()(uint32_t r, uint32_t cv) const {
    const int c = static_cast<int>(cv) * V;
    int b, oy, ox;
    out.split(r, b, oy, ox);
    const PoolWindow win = pool_window(g, oy, ox);
    Pack<V> s;
#pragma unroll
    for (int k = 0; k < V; ++k) s.v[k] = 0.f;
    for (int iy = win.y0; iy < win.y1; ++iy)
      for (int ix = win.x0; ix < win.x1; ++ix) {
        const Pack<V> v = load<V>(at(x, (static_cast<int64_t>(b) * g.h + iy) * g.w + ix, c));
#pragma unroll
        for (int k = 0; k < V; ++k) s.v[k] += v.v[k];
      }
    const float inv = win.area > 0 ? 1.f / static_cast<float>(win.area) : 0.f;
#pragma unroll
    for (int k = 0; k < V; ++k) s.v[k] *= inv;
    store<V>(at(y, r, c), s);
  }
};

// dx[pixel] = sum of dy over the windows whose first maximum (row-major, the value equal
// to the saved output, or the first NaN when the output is NaN) is this pixel. The pixel
// is that first maximum when it equals the window's output and no position before it in
// the window does: one compare per window, and a scan of the earlier positions only for
// the windows it ties.
template <int V>
struct MaxBackward {
  ConstRowView x, y, dy;
  RowView dx;
  PoolGeometry g;
  PixelIndex in;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t cv) const {
    const int c = static_cast<int>(cv) * V;
    int b, iy, ix;
    in.split(r, b, iy, ix);
    int oy0, oy1, ox0, ox1;
    pool_outputs_of(iy, g.kh, g.sh, g.pt, g.oh, oy0, oy1);
    pool_outputs_of(ix, g.kw, g.sw, g.pl, g.ow, ox0, ox1);
    const Pack<V> v = load<V>(at(x, r, c));
    Pack<V> acc = start<V>(dx, r, c, accumulate);
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        const int64_t orow = (static_cast<int64_t>(b) * g.oh + oy) * g.ow + ox;
        const Pack<V> m = load<V>(at(y, orow, c));
        bool mine[V], any = false;  // mine: this pixel ties the window's output (so far)
#pragma unroll
        for (int k = 0; k < V; ++k) {
          mine[k] = v.v[k] == m.v[k] || (m.v[k] != m.v[k] && v.v[k] != v.v[k]);
          any = any || mine[k];
        }
        if (!any) continue;
        const PoolWindow win = pool_window(g, oy, ox);
        for (int jy = win.y0; jy <= iy && any; ++jy) {  // a maximum before (iy, ix) takes it
          const int x1 = jy == iy ? ix : win.x1;
          for (int jx = win.x0; jx < x1 && any; ++jx) {
            const Pack<V> u = load<V>(at(x, (static_cast<int64_t>(b) * g.h + jy) * g.w + jx, c));
            any = false;
#pragma unroll
            for (int k = 0; k < V; ++k) {
              mine[k] = mine[k] && !(u.v[k] == m.v[k] || (m.v[k] != m.v[k] && u.v[k] != u.v[k]));
              any = any || mine[k];
            }
          }
        }
        if (!any) continue;
        const Pack<V> d = load<V>(at(dy, orow, c));
#pragma unroll
        for (int k = 0; k < V; ++k)
          if (mine[k]) acc.v[k] += d.v[k];
      }
    store<V>(at(dx, r, c), acc);
  }
};

template <int V>
struct AvgBackward {
  ConstRowView dy;
  RowView dx;
  PoolGeometry g;
  PixelIndex in;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t cv) const {
    const int c = static_cast<int>(cv) * V;
    int b, iy, ix;
    in.split(r, b, iy, ix);
    int oy0, oy1, ox0, ox1;
    pool_outputs_of(iy, g.kh, g.sh, g.pt, g.oh, oy0, oy1);
    pool_outputs_of(ix, g.kw, g.sw, g.pl, g.ow, ox0, ox1);
    Pack<V> acc = start<V>(dx, r, c, accumulate);
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        const PoolWindow win = pool_window(g, oy, ox);
        const float inv = win.area > 0 ? 1.f / static_cast<float>(win.area) : 0.f;
        const Pack<V> d = load<V>(at(dy, (static_cast<int64_t>(b) * g.oh + oy) * g.ow + ox, c));
#pragma unroll
        for (int k = 0; k < V; ++k) acc.v[k] += d.v[k] * inv;
      }
    store<V>(at(dx, r, c), acc);
  }
};

// Four channels per thread when every view's channels start 16-byte aligned and come in
// whole fours (cols and ld multiples of 4): a branch's slice of a block output usually is.
bool four_wide(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->cols() % 4 != 0 || t->ld() % 4 != 0 || reinterpret_cast<uintptr_t>(t->data()) % 16 != 0) return false;
  return true;
}

// Runs F<4> over (rows, cols / 4) or F<1> over (rows, cols), with the same arguments.
template <template <int> class F, class... Args>
void launch_pool(const char* op, int64_t rows, int64_t cols, bool wide, Args... args) {
  if (wide)
    launch_map(op, rows, cols / 4, F<4>{args...});
  else
    launch_map(op, rows, cols, F<1>{args...});
}

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
  launch_pool<MaxForward>("max_pool2d", y.rows(), y.cols(), four_wide({&x, &y}), cview(x), view(y), g,
                          PixelIndex(g.oh, g.ow));
}

void max_pool2d_backward(const Tensor& x, const Tensor& y, const Tensor& dy, const Pool2dParams& p, Tensor& dx,
                         bool accumulate) {
  DeviceGuard guard(x.device());
  const PoolGeometry g = geometry(x, y, p);
  launch_pool<MaxBackward>("max_pool2d_backward", dx.rows(), dx.cols(), four_wide({&x, &y, &dy, &dx}), cview(x),
                           cview(y), cview(dy), view(dx), g, PixelIndex(g.h, g.w), accumulate);
}

void avg_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  DeviceGuard guard(x.device());
  const PoolGeometry g = geometry(x, y, p);
  launch_pool<AvgForward>("avg_pool2d", y.rows(), y.cols(), four_wide({&x, &y}), cview(x), view(y), g,
                          PixelIndex(g.oh, g.ow));
}

void avg_pool2d_backward(const Tensor& dy, const Pool2dParams& p, Tensor& dx, bool accumulate) {
  DeviceGuard guard(dy.device());
  const PoolGeometry g = geometry(dx, dy, p);
  launch_pool<AvgBackward>("avg_pool2d_backward", dx.rows(), dx.cols(), four_wide({&dy, &dx}), cview(dy), view(dx), g,
                           PixelIndex(g.h, g.w), accumulate);
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
