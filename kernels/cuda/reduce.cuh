// Deterministic column reductions over row-strided data, shared by sum_rows and batch
// norm: every (row-block, column) pair writes a partial sum in double to a workspace, and
// a second pass adds the partials of each column in a fixed order. No atomics, so the
// same input always gives the same bits.
#pragma once
#include <algorithm>

#include "kernels/cuda/common.cuh"

namespace trick {
namespace cuda {

constexpr int kColTile = 32;  // columns per block (one warp wide: coalesced rows)
constexpr int kRowLanes = 8;  // threads per column in a block

// partials[(v * row_blocks + blockIdx.y) * cols + c] = sum over this block's rows of
// f(r, c)[v], for NV values per element. Block (kColTile, kRowLanes), grid (ceil(cols /
// kColTile), row_blocks).
template <int NV, class F>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    column_partials_kernel(int64_t rows, int cols, F f, double* partials) {
  __shared__ double part[NV][kRowLanes][kColTile];
  const int c = blockIdx.x * kColTile + threadIdx.x;
  double acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = 0.0;
  if (c < cols) {
    const int64_t step = static_cast<int64_t>(gridDim.y) * kRowLanes;
    for (int64_t r = static_cast<int64_t>(blockIdx.y) * kRowLanes + threadIdx.y; r < rows; r += step) {
      double vals[NV];
      f(r, c, vals);
      for (int v = 0; v < NV; ++v) acc[v] += vals[v];
    }
  }
  for (int v = 0; v < NV; ++v) part[v][threadIdx.y][threadIdx.x] = acc[v];
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int v = 0; v < NV; ++v) {
      double s = 0.0;
      for (int i = 0; i < kRowLanes; ++i) s += part[v][i][threadIdx.x];
      partials[(static_cast<int64_t>(v) * gridDim.y + blockIdx.y) * cols + c] = s;
    }
  }
}

// How many row blocks: enough blocks to fill the device, few enough that each thread
// still sums a run of rows.
inline int column_row_blocks(int64_t rows, int64_t cols) {
  const int64_t col_blocks = (cols + kColTile - 1) / kColTile;
  const int64_t want = std::max<int64_t>(1, 4 * sm_count() / std::max<int64_t>(col_blocks, 1));
  const int64_t useful = std::max<int64_t>(1, (rows + 4 * kRowLanes - 1) / (4 * kRowLanes));
  return static_cast<int>(std::min<int64_t>({want, useful, 1024}));
}

// Sums f over rows for every column into `partials` (NV * row_blocks * cols doubles,
// returned through `row_blocks`); finish with column_total().
template <int NV, class F>
double* column_partials(const char* op, int64_t rows, int64_t cols, const F& f, int& row_blocks) {
  check_fits_int(op, "column count", cols);
  row_blocks = column_row_blocks(rows, cols);
  double* partials = workspace_as<double>(Workspace::Reduce, static_cast<size_t>(NV) * row_blocks * cols);
  if (cols == 0) return partials;
  const dim3 grid(static_cast<unsigned>((cols + kColTile - 1) / kColTile), static_cast<unsigned>(row_blocks));
  column_partials_kernel<NV>
      <<<grid, dim3(kColTile, kRowLanes), 0, stream()>>>(rows, static_cast<int>(cols), f, partials);
  TRICK_CUDA_LAUNCHED(column_partials_kernel);
  return partials;
}

// The total of value v for column c, in a fixed order.
__device__ __forceinline__ double column_total(const double* partials, int row_blocks, int cols, int v, int c) {
  double s = 0.0;
  for (int b = 0; b < row_blocks; ++b) s += partials[(static_cast<int64_t>(v) * row_blocks + b) * cols + c];
  return s;
}

}  // namespace cuda
}  // namespace trick
