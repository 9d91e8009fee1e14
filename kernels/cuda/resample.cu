// CUDA separable resampling, NHWC (kernels/resample.h). The forward passes gather: one
// thread per output element sums its run in the CPU twin's order. The backward passes
// follow the CPU twin's ownership instead of scattering with atomics: one thread owns a
// whole line of dx along the resampled axis for one (image, other coordinate, channel),
// clears it (unless accumulating) and adds every output's contribution in order, so no
// two threads touch the same element and results are deterministic.
//
// A device table is not validated on the host (that would need a copy back), so the
// kernels clip each run to [0, in_size): a bad table gives wrong numbers, never a read
// or write out of bounds.
#include "kernels/cuda/elementwise.cuh"
#include "kernels/resample.h"

namespace trick {
namespace cuda {

namespace {

struct Table {
  const float* e;
  int stride;  // 2 + taps
  int in_size;
  // The clipped run of output o: inputs [first, first + count), weights w[0..count).
  __device__ __forceinline__ void run(int o, int& first, int& count, const float*& w) const {
    const float* row = e + static_cast<int64_t>(o) * stride;
    const float f = row[0], c = row[1];
    const bool ok = f >= 0.f && f < static_cast<float>(in_size) && c >= 1.f && c <= static_cast<float>(stride - 2);
    first = ok ? static_cast<int>(f) : 0;
    count = ok ? min(static_cast<int>(c), in_size - first) : 0;
    w = row + 2;
  }
};

Table table_of(const ResampleTable& t) {
  check_fits_int("resample", "table size", t.entries.numel());
  return {t.entries.data(), static_cast<int>(t.entries.dim(1)), static_cast<int>(t.in_size)};
}

// y[b, o, j, ch] = sum_k w_k x[b, first + k, j, ch]; row index r of y = (b * OH + o) * W + j.
struct RowsForward {
  ConstRowView x;
  RowView y;
  Table t;
  FastDiv w_div, oh_div;
  int h;
  __device__ void operator()(uint32_t r, uint32_t ch) const {
    uint32_t bo, j, b, o;
    w_div.divmod(r, bo, j);
    oh_div.divmod(bo, b, o);
    int first, count;
    const float* w;
    t.run(static_cast<int>(o), first, count, w);
    float s = 0.f;
    for (int k = 0; k < count; ++k) s += w[k] * x.at((static_cast<int64_t>(b) * h + first + k) * w_div.d + j, ch);
    y.at(r, ch) = s;
  }
};

// y[b, i, o, ch] = sum_k w_k x[b, i, first + k, ch]; row r of y = (b * H + i) * OW + o.
struct ColsForward {
  ConstRowView x;
  RowView y;
  Table t;
  FastDiv ow_div;
  int w;
  __device__ void operator()(uint32_t r, uint32_t ch) const {
    uint32_t bi, o;
    ow_div.divmod(r, bi, o);
    int first, count;
    const float* wt;
    t.run(static_cast<int>(o), first, count, wt);
    float s = 0.f;
    for (int k = 0; k < count; ++k) s += wt[k] * x.at(static_cast<int64_t>(bi) * w + first + k, ch);
    y.at(r, ch) = s;
  }
};

// Thread (line, ch), line = b * W + j, owns dx[b, :, j, ch].
struct RowsBackward {
  ConstRowView dy;
  RowView dx;
  Table t;
  FastDiv w_div;
  int h, oh;
  bool accumulate;
  __device__ void operator()(uint32_t line, uint32_t ch) const {
    uint32_t b, j;
    w_div.divmod(line, b, j);
    const int64_t wd = w_div.d;
    const int64_t in_base = static_cast<int64_t>(b) * h * wd + j, out_base = static_cast<int64_t>(b) * oh * wd + j;
    if (!accumulate)
      for (int i = 0; i < h; ++i) dx.at(in_base + i * wd, ch) = 0.f;
    for (int o = 0; o < oh; ++o) {
      int first, count;
      const float* w;
      t.run(o, first, count, w);
      const float g = dy.at(out_base + o * wd, ch);
      for (int k = 0; k < count; ++k) dx.at(in_base + (first + k) * wd, ch) += w[k] * g;
    }
  }
};

// Thread (line, ch), line = b * H + i, owns dx[b, i, :, ch].
struct ColsBackward {
  ConstRowView dy;
  RowView dx;
  Table t;
  int w, ow;
  bool accumulate;
  __device__ void operator()(uint32_t line, uint32_t ch) const {
    const int64_t in_base = static_cast<int64_t>(line) * w, out_base = static_cast<int64_t>(line) * ow;
    if (!accumulate)
      for (int i = 0; i < w; ++i) dx.at(in_base + i, ch) = 0.f;
    for (int o = 0; o < ow; ++o) {
      int first, count;
      const float* wt;
      t.run(o, first, count, wt);
      const float g = dy.at(out_base + o, ch);
      for (int k = 0; k < count; ++k) dx.at(in_base + first + k, ch) += wt[k] * g;
    }
  }
};

FastDiv divider(int64_t d) { return FastDiv(static_cast<uint32_t>(d > 0 ? d : 1)); }

void check_sizes(const char* op, const Tensor& a, const Tensor& b) {
  check_fits_int(op, "rows", a.rows());
  check_fits_int(op, "rows", b.rows());
}

}  // namespace

void resample_rows(const Tensor& x, const ResampleTable& table, Tensor& y) {
  DeviceGuard guard(x.device());
  check_sizes("resample_rows", x, y);
  launch_map("resample_rows", y.rows(), y.cols(),
             RowsForward{cview(x), view(y), table_of(table), divider(x.dim(2)), divider(y.dim(1)),
                         static_cast<int>(x.dim(1))});
}

void resample_rows_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate) {
  DeviceGuard guard(dy.device());
  check_sizes("resample_rows_backward", dy, dx);
  launch_map("resample_rows_backward", dx.dim(0) * dx.dim(2), dx.cols(),
             RowsBackward{cview(dy), view(dx), table_of(table), divider(dx.dim(2)), static_cast<int>(dx.dim(1)),
                          static_cast<int>(dy.dim(1)), accumulate});
}

void resample_cols(const Tensor& x, const ResampleTable& table, Tensor& y) {
  DeviceGuard guard(x.device());
  check_sizes("resample_cols", x, y);
  launch_map("resample_cols", y.rows(), y.cols(),
             ColsForward{cview(x), view(y), table_of(table), divider(y.dim(2)), static_cast<int>(x.dim(2))});
}

void resample_cols_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate) {
  DeviceGuard guard(dy.device());
  check_sizes("resample_cols_backward", dy, dx);
  launch_map("resample_cols_backward", dx.dim(0) * dx.dim(1), dx.cols(),
             ColsBackward{cview(dy), view(dx), table_of(table), static_cast<int>(dx.dim(2)),
                          static_cast<int>(dy.dim(2)), accumulate});
}

}  // namespace cuda
}  // namespace trick
