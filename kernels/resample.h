// Separable resampling of NHWC images along one axis, driven by a weight table.
//
//   resample_rows: along H   x: (N, H, W, C)  ->  y: (N, OH, W, C)
//   resample_cols: along W   x: (N, H, W, C)  ->  y: (N, H, OW, C)
//
// Output index o of the resampled axis is a weighted sum of a run of input indices:
//   y[o] = sum_{k < count(o)} w(o, k) * x[first(o) + k]
// A resize followed by a crop is one table per axis holding only the cropped output
// indices (layers/resize.h builds Pillow's antialiased bilinear tables). The backward is
// the transposed application: dx[first(o) + k] += w(o, k) * dy[o].
//
// x, y, dy, dx are row-strided (the channel dim contiguous, e.g. a channel slice).
#pragma once
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace trick {

// The table lives in one float tensor on the device of the data it resamples, so the
// CUDA kernels read it like any other operand and it can be copied with to():
//   entries: (out_size, 2 + taps): [first, count, w_0, ..., w_{taps-1}] per output index,
//   first and count stored as floats (exact: sizes are far below 2^24), weights past
//   count are zero. Every run [first, first + count) lies inside [0, in_size).
struct ResampleTable {
  Tensor entries;
  int64_t in_size = 0;
  int64_t out_size() const { return entries.defined() ? entries.dim(0) : 0; }
  int64_t taps() const { return entries.defined() ? entries.dim(1) - 2 : 0; }
  ResampleTable to(Device device) const { return {entries.to(device), in_size}; }
};

// Builds a host table from runs and weights (weights[o] has count(o) entries, at least 1);
// throws if a run leaves [0, in_size).
ResampleTable make_resample_table(int64_t in_size, const std::vector<int64_t>& first,
                                  const std::vector<std::vector<double>>& weights);

// y: (N, table.out_size(), W, C) preallocated
void resample_rows(const Tensor& x, const ResampleTable& table, Tensor& y);
// dx: (N, table.in_size, W, C); accumulate adds into dx instead of overwriting it
void resample_rows_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate);
// y: (N, H, table.out_size(), C) preallocated
void resample_cols(const Tensor& x, const ResampleTable& table, Tensor& y);
// dx: (N, H, table.in_size, C)
void resample_cols_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate);

namespace cpu {
void resample_rows(const Tensor& x, const ResampleTable& table, Tensor& y);
void resample_rows_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate);
void resample_cols(const Tensor& x, const ResampleTable& table, Tensor& y);
void resample_cols_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate);
}  // namespace cpu
namespace cuda {
void resample_rows(const Tensor& x, const ResampleTable& table, Tensor& y);
void resample_rows_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate);
void resample_cols(const Tensor& x, const ResampleTable& table, Tensor& y);
void resample_cols_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate);
}  // namespace cuda

}  // namespace trick
