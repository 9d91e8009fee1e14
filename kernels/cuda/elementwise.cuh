// A grid-stride loop over every element of an R x C row-strided layout, calling a functor
// with (row, col). Used by the elementwise ops and by the per-element parts of others.
#pragma once
#include "kernels/cuda/common.cuh"

namespace trick {
namespace cuda {

template <class F>
__global__ void __launch_bounds__(256) map_kernel(uint32_t total, FlatIndex index, F f) {
  const uint32_t step = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    uint32_t r, c;
    index.split(i, r, c);
    f(r, c);
  }
}

// Runs f(r, c) for r < rows, c < cols on the library stream.
template <class F>
void launch_map(const char* op, int64_t rows, int64_t cols, const F& f) {
  const int64_t total = rows * cols;
  if (total == 0) return;
  // i + step stays below 2^32 because total < 2^31 and step < 2^31.
  check_fits_int(op, "element count", total);
  constexpr int kThreads = 256;
  map_kernel<<<grid_for(total, kThreads), kThreads, 0, stream()>>>(static_cast<uint32_t>(total), FlatIndex(cols), f);
  TRICK_CUDA_LAUNCHED(map_kernel);
}

}  // namespace cuda
}  // namespace trick
