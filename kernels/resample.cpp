// Separable resampling: table construction, argument checks and dispatch.
#include "kernels/resample.h"

#include <algorithm>

#include "kernels/check.h"

namespace trick {

ResampleTable make_resample_table(int64_t in_size, const std::vector<int64_t>& first,
                                  const std::vector<std::vector<double>>& weights) {
  TRICK_CHECK(in_size >= 1 && in_size < (int64_t(1) << 24), "resample table: input size ", in_size,
              " must be in [1, 2^24)");
  TRICK_CHECK(first.size() == weights.size() && !first.empty(), "resample table: ", first.size(), " runs but ",
              weights.size(), " weight lists (need as many, at least one)");
  size_t taps = 1;
  for (const auto& w : weights) taps = std::max(taps, w.size());
  const int64_t out = static_cast<int64_t>(first.size());
  std::vector<float> e(static_cast<size_t>(out) * (2 + taps), 0.f);
  for (int64_t o = 0; o < out; ++o) {
    const int64_t count = static_cast<int64_t>(weights[o].size());
    TRICK_CHECK(count >= 1 && first[o] >= 0 && first[o] + count <= in_size, "resample table: output ", o,
                " reads inputs [", first[o], ", ", first[o] + count, "), outside [0, ", in_size, ")");
    float* row = e.data() + o * (2 + taps);
    row[0] = static_cast<float>(first[o]);
    row[1] = static_cast<float>(count);
    for (int64_t k = 0; k < count; ++k) row[2 + k] = static_cast<float>(weights[o][k]);
  }
  return {Tensor::from_vector(Shape{out, static_cast<int64_t>(2 + taps)}, e), in_size};
}

namespace {

// axis 1 (rows) or 2 (cols). `in` is the tensor on the table's input side, `out` on its
// output side; both (N, H, W, C) and equal except along the axis.
void check_resample(const char* op, int axis, const Tensor& in, const char* in_name, const Tensor& out,
                    const char* out_name, const ResampleTable& t) {
  check_ndim(op, in_name, in, 4);
  check_ndim(op, out_name, out, 4);
  check_row_strided(op, in_name, in);
  check_row_strided(op, out_name, out);
  check_contiguous(op, "table", t.entries);
  check_ndim(op, "table", t.entries, 2);
  TRICK_CHECK(t.entries.dim(1) >= 3, op, ": table has ", t.entries.dim(1), " columns, expected 2 + taps >= 3");
  TRICK_CHECK(in.dim(axis) == t.in_size, op, ": ", in_name, " ", in.shape().str(), " has ", in.dim(axis),
              axis == 1 ? " rows" : " columns", ", the table resamples ", t.in_size);
  Shape want = in.shape();
  want.d[axis] = t.out_size();
  check_shape(op, out_name, out, want);
  // Tables come from make_resample_table; a host table is re-checked here because a bad
  // run would read out of bounds (cheap: one pass over out_size entries).
  if (t.entries.device().is_cpu()) {
    const float* e = t.entries.data();
    const int64_t stride = t.entries.dim(1);
    for (int64_t o = 0; o < t.out_size(); ++o) {
      const float f = e[o * stride], c = e[o * stride + 1];
      TRICK_CHECK(f >= 0 && c >= 1 && c <= stride - 2 && f + c <= static_cast<float>(t.in_size), op,
                  ": table entry ", o, " reads inputs [", f, ", ", f + c, "), outside [0, ", t.in_size, ")");
    }
  }
}

}  // namespace

void resample_rows(const Tensor& x, const ResampleTable& table, Tensor& y) {
  const Device dev = check_same_device("resample_rows", {&x, &table.entries, &y});
  check_resample("resample_rows", 1, x, "input", y, "output", table);
  TRICK_DISPATCH("resample_rows", dev, resample_rows, x, table, y);
}

void resample_rows_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("resample_rows_backward", {&dy, &table.entries, &dx});
  check_resample("resample_rows_backward", 1, dx, "input gradient", dy, "output gradient", table);
  TRICK_DISPATCH("resample_rows_backward", dev, resample_rows_backward, dy, table, dx, accumulate);
}

void resample_cols(const Tensor& x, const ResampleTable& table, Tensor& y) {
  const Device dev = check_same_device("resample_cols", {&x, &table.entries, &y});
  check_resample("resample_cols", 2, x, "input", y, "output", table);
  TRICK_DISPATCH("resample_cols", dev, resample_cols, x, table, y);
}

void resample_cols_backward(const Tensor& dy, const ResampleTable& table, Tensor& dx, bool accumulate) {
  const Device dev = check_same_device("resample_cols_backward", {&dy, &table.entries, &dx});
  check_resample("resample_cols_backward", 2, dx, "input gradient", dy, "output gradient", table);
  TRICK_DISPATCH("resample_cols_backward", dev, resample_cols_backward, dy, table, dx, accumulate);
}

}  // namespace trick
