// CPU separable resampling, NHWC. Every loop runs with the channels innermost over whole
// contiguous pixels. Forward passes parallelise over output rows; backward passes
// parallelise over slices of dx that no two threads share (columns for the row pass,
// image rows for the column pass), so the scatter needs no atomics.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "kernels/resample.h"

namespace trick {
namespace cpu {

namespace {

struct Run {
  int64_t first, count;
  const float* w;
};

Run run(const ResampleTable& t, int64_t o) {
  const int64_t stride = t.entries.dim(1);
  const float* e = t.entries.data() + o * stride;
  return {static_cast<int64_t>(e[0]), static_cast<int64_t>(e[1]), e + 2};
}

void zero_rows(Tensor& t) {
  const int64_t r = t.rows(), c = t.cols(), ld = t.ld();
  float* d = t.data();
  parallel_range(r, std::max<int64_t>(1, 65536 / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) std::memset(d + i * ld, 0, c * sizeof(float));
  });
}

// f(a, b) for every (a, b) in [0, na) x [0, nb), split over the CPU threads; `cost` is
// roughly the floats one (a, b) touches.
template <typename F>
void each2(int64_t na, int64_t nb, int64_t cost, F f) {
  parallel_range(na * nb, std::max<int64_t>(1, 32768 / std::max<int64_t>(cost, 1)), [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) f(i / nb, i % nb);
  });
}

}  // namespace

void resample_rows(const Tensor& x, const ResampleTable& table, Tensor& y) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1);
  const int64_t xld = x.ld(), yld = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
  each2(n, oh, w * c * 4, [&](int64_t b, int64_t o) {
    const Run r = run(table, o);
    for (int64_t j = 0; j < w; ++j) {
      float* out = yp + ((b * oh + o) * w + j) * yld;
      for (int64_t ch = 0; ch < c; ++ch) out[ch] = 0.f;
      for (int64_t k = 0; k < r.count; ++k) {
        const float wk = r.w[k];
        const float* in = xp + ((b * h + r.first + k) * w + j) * xld;
        for (int64_t ch = 0; ch < c; ++ch) out[ch] += wk * in[ch];
      }
    }
  });
}

void resample_rows_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate) {
  const int64_t n = dx.dim(0), h = dx.dim(1), w = dx.dim(2), c = dx.dim(3), oh = dy.dim(1);
  if (!accumulate) zero_rows(dx);
  const int64_t dyld = dy.ld(), dxld = dx.ld();
  const float* dyp = dy.data();
  float* dxp = dx.data();
  // Each thread owns whole columns j of dx, so the runs of different outputs (which
  // overlap in i) never race.
  each2(n, w, oh * c * 4, [&](int64_t b, int64_t j) {
    for (int64_t o = 0; o < oh; ++o) {
      const Run r = run(table, o);
      const float* g = dyp + ((b * oh + o) * w + j) * dyld;
      for (int64_t k = 0; k < r.count; ++k) {
        const float wk = r.w[k];
        float* out = dxp + ((b * h + r.first + k) * w + j) * dxld;
        for (int64_t ch = 0; ch < c; ++ch) out[ch] += wk * g[ch];
      }
    }
  });
}

void resample_cols(const Tensor& x, const ResampleTable& table, Tensor& y) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3), ow = y.dim(2);
  const int64_t xld = x.ld(), yld = y.ld();
  const float* xp = x.data();
  float* yp = y.data();
  each2(n, h, ow * c * 4, [&](int64_t b, int64_t i) {
    const float* in_row = xp + (b * h + i) * w * xld;
    for (int64_t o = 0; o < ow; ++o) {
      const Run r = run(table, o);
      float* out = yp + ((b * h + i) * ow + o) * yld;
      for (int64_t ch = 0; ch < c; ++ch) out[ch] = 0.f;
      for (int64_t k = 0; k < r.count; ++k) {
        const float wk = r.w[k];
        const float* in = in_row + (r.first + k) * xld;
        for (int64_t ch = 0; ch < c; ++ch) out[ch] += wk * in[ch];
      }
    }
  });
}

void resample_cols_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate) {
  const int64_t n = dx.dim(0), h = dx.dim(1), w = dx.dim(2), c = dx.dim(3), ow = dy.dim(2);
  if (!accumulate) zero_rows(dx);
  const int64_t dyld = dy.ld(), dxld = dx.ld();
  const float* dyp = dy.data();
  float* dxp = dx.data();
  // Each thread owns whole image rows of dx.
  each2(n, h, ow * c * 4, [&](int64_t b, int64_t i) {
    float* dx_row = dxp + (b * h + i) * w * dxld;
    for (int64_t o = 0; o < ow; ++o) {
      const Run r = run(table, o);
      const float* g = dyp + ((b * h + i) * ow + o) * dyld;
      for (int64_t k = 0; k < r.count; ++k) {
        const float wk = r.w[k];
        float* out = dx_row + (r.first + k) * dxld;
        for (int64_t ch = 0; ch < c; ++ch) out[ch] += wk * g[ch];
      }
    }
  });
}

}  // namespace cpu
}  // namespace trick
