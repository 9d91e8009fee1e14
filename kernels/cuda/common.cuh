// Device-side helpers shared by the CUDA kernels: row-strided views, block reductions.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/fast_div.h"
#include "kernels/cuda/runtime.h"
#include "tensor/tensor.h"

namespace trick {
namespace cuda {

// A row-strided tensor as a kernel sees it: rows() rows of cols() floats, ld apart.
struct RowView {
  float* p;
  int64_t ld;
  __device__ __forceinline__ float& at(int64_t r, int64_t c) const { return p[r * ld + c]; }
};
struct ConstRowView {
  const float* p;
  int64_t ld;
  __device__ __forceinline__ float at(int64_t r, int64_t c) const { return p[r * ld + c]; }
};
inline RowView view(Tensor& t) { return {t.data(), t.ld()}; }
inline ConstRowView cview(const Tensor& t) { return {t.data(), t.ld()}; }

// Flat element index -> (row, col) of an R x C row-strided layout, for R * C < 2^31.
struct FlatIndex {
  FastDiv cols;
  explicit FlatIndex(int64_t c) : cols(static_cast<uint32_t>(c > 0 ? c : 1)) {}
  __device__ __forceinline__ void split(uint32_t i, uint32_t& r, uint32_t& c) const { cols.divmod(i, r, c); }
};

// Sum of `v` over the block; the result is valid in thread 0. blockDim.x must be a
// multiple of 32 and at most 1024. `scratch` holds 32 values.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? scratch[threadIdx.x] : T(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Broadcast of a block-wide sum to every thread.
template <typename T>
__device__ __forceinline__ T block_sum_all(T v, T* scratch) {
  v = block_sum(v, scratch);
  __syncthreads();
  if (threadIdx.x == 0) scratch[0] = v;
  __syncthreads();
  const T r = scratch[0];
  __syncthreads();
  return r;
}

// Max that ignores NaN like std::fmax (the CPU softmax's choice); broadcast to all threads.
__device__ __forceinline__ float block_fmax_all(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  if (warp == 0) {
    v = lane < warps ? scratch[lane] : v;  // lanes past the warp count repeat a valid value
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const float r = scratch[0];
  __syncthreads();
  return r;
}

}  // namespace cuda
}  // namespace trick
