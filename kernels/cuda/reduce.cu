// CUDA reductions. Two passes everywhere: blocks write partials (in double, like the CPU
// twin's accumulators) to a workspace, then one pass combines them in a fixed order, so
// results are deterministic. max_all keeps the CPU's rule: the first NaN if there is one,
// else the first occurrence of the maximum.
#include <algorithm>

#include "kernels/cuda/reduce.cuh"
#include "kernels/reduce.h"

namespace trick {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// Segments of a reduction: segment s has `len` elements; element i of it is load(s, i).
struct RowStridedLoad {  // one segment: a whole row-strided tensor in row-major order
  ConstRowView x;
  FlatIndex index;
  __device__ float operator()(int64_t, int64_t i) const {
    uint32_t r, c;
    index.split(static_cast<uint32_t>(i), r, c);
    return x.at(r, c);
  }
};
struct ContiguousLoad {  // segment s: `len` consecutive floats
  const float* x;
  int64_t len;
  __device__ float operator()(int64_t s, int64_t i) const { return x[s * len + i]; }
};

enum class Combine { Sum, SumSquares, MaxAbs };

template <Combine C>
__device__ __forceinline__ double fold(double acc, float v) {
  if (C == Combine::Sum) return acc + v;
  if (C == Combine::SumSquares) return acc + static_cast<double>(v) * v;
  return fmax(acc, static_cast<double>(fabsf(v)));  // fmax ignores NaN, as std::fmax does
}

template <Combine C>
__device__ __forceinline__ double merge(double a, double b) {
  return C == Combine::MaxAbs ? fmax(a, b) : a + b;
}

// partials[s * gridDim.x + blockIdx.x] for segment s = blockIdx.y.
template <Combine C, class Load>
__global__ void __launch_bounds__(kThreads) segment_partials_kernel(Load load, int64_t len, double* partials) {
  __shared__ double scratch[kThreads];
  const int64_t s = blockIdx.y;
  double acc = 0.0;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < len; i += step)
    acc = fold<C>(acc, load(s, i));
  scratch[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) scratch[threadIdx.x] = merge<C>(scratch[threadIdx.x], scratch[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[s * gridDim.x + blockIdx.x] = scratch[0];
}

// out[s] = combination of the `parts` partials of segment s (one block per segment).
template <Combine C>
__global__ void __launch_bounds__(kThreads) segment_finish_kernel(const double* partials, int parts, float* out) {
  __shared__ double scratch[kThreads];
  const int64_t s = blockIdx.x;
  double acc = 0.0;
  for (int i = threadIdx.x; i < parts; i += kThreads) acc = merge<C>(acc, partials[s * parts + i]);
  scratch[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) scratch[threadIdx.x] = merge<C>(scratch[threadIdx.x], scratch[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) out[s] = static_cast<float>(scratch[0]);
}

template <Combine C, class Load>
void reduce_segments(const char* op, int64_t segments, int64_t len, const Load& load, float* out) {
  if (segments == 0) return;
  check_fits_int(op, "segment count", segments, 65535);
  const int64_t want = std::max<int64_t>(1, 8 * sm_count() / segments);
  const int64_t useful = std::max<int64_t>(1, (len + 4 * kThreads - 1) / (4 * kThreads));
  const int parts = static_cast<int>(std::min<int64_t>({want, useful, 1024}));
  double* partials = workspace_as<double>(Workspace::Reduce, static_cast<size_t>(segments) * parts);
  segment_partials_kernel<C>
      <<<dim3(parts, static_cast<unsigned>(segments)), kThreads, 0, stream()>>>(load, len, partials);
  TRICK_CUDA_LAUNCHED(segment_partials_kernel);
  segment_finish_kernel<C><<<static_cast<unsigned>(segments), kThreads, 0, stream()>>>(partials, parts, out);
  TRICK_CUDA_LAUNCHED(segment_finish_kernel);
}

// --- max with the index of its first occurrence ---------------------------------------

struct Best {
  float v;
  int64_t i;
};

// Whether a is preferred over b: NaN beats numbers; then the larger value; ties (== also
// holds for -0 and +0) go to the smaller index. A total order, so any reduction tree
// finds what the CPU's left-to-right scan finds.
__device__ __forceinline__ bool better(const Best& a, const Best& b) {
  const bool an = a.v != a.v, bn = b.v != b.v;
  if (an || bn) return an && bn ? a.i < b.i : an;
  if (a.v != b.v) return a.v > b.v;
  return a.i < b.i;
}

__device__ __forceinline__ Best block_best(Best b, float* sv, int64_t* si) {
  sv[threadIdx.x] = b.v;
  si[threadIdx.x] = b.i;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) {
      const Best o{sv[threadIdx.x + half], si[threadIdx.x + half]};
      const Best m{sv[threadIdx.x], si[threadIdx.x]};
      if (better(o, m)) sv[threadIdx.x] = o.v, si[threadIdx.x] = o.i;
    }
    __syncthreads();
  }
  return {sv[0], si[0]};
}

__global__ void __launch_bounds__(kThreads)
    max_partials_kernel(ConstRowView x, FlatIndex index, int64_t total, float* pv, int64_t* pi) {
  __shared__ float sv[kThreads];
  __shared__ int64_t si[kThreads];
  Best best{-INFINITY, INT64_MAX};
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += step) {
    uint32_t r, c;
    index.split(static_cast<uint32_t>(i), r, c);
    const Best cand{x.at(r, c), i};
    if (better(cand, best)) best = cand;
  }
  best = block_best(best, sv, si);
  if (threadIdx.x == 0) pv[blockIdx.x] = best.v, pi[blockIdx.x] = best.i;
}

__global__ void __launch_bounds__(kThreads)
    max_finish_kernel(const float* pv, const int64_t* pi, int parts, float* y, int64_t* at) {
  __shared__ float sv[kThreads];
  __shared__ int64_t si[kThreads];
  Best best{-INFINITY, INT64_MAX};
  for (int i = threadIdx.x; i < parts; i += kThreads) {
    const Best cand{pv[i], pi[i]};
    if (better(cand, best)) best = cand;
  }
  best = block_best(best, sv, si);
  if (threadIdx.x == 0) y[0] = best.v, at[0] = best.i;
}

// --- column sums ------------------------------------------------------------------------

struct ColumnValue {
  ConstRowView x;
  __device__ void operator()(int64_t r, int c, double* v) const { v[0] = x.at(r, c); }
};

__global__ void sum_rows_finish_kernel(const double* partials, int row_blocks, int cols, float* y, bool accumulate) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const double s = column_total(partials, row_blocks, cols, 0, c);
  y[c] = static_cast<float>((accumulate ? static_cast<double>(y[c]) : 0.0) + s);
}

}  // namespace

void sum_all(const Tensor& x, Tensor& y) {
  DeviceGuard g(x.device());
  const int64_t total = x.numel();
  if (total == 0) {
    TRICK_CUDA_CHECK(cudaMemsetAsync(y.data(), 0, sizeof(float), stream()));
    return;
  }
  check_fits_int("sum", "element count", total);
  reduce_segments<Combine::Sum>("sum", 1, total, RowStridedLoad{cview(x), FlatIndex(x.cols())}, y.data());
}

void max_all(const Tensor& x, Tensor& y, int64_t* argmax) {
  DeviceGuard g(x.device());
  const int64_t total = x.numel();
  check_fits_int("max", "element count", total);
  const int parts = static_cast<int>(
      std::min<int64_t>({(total + 4 * kThreads - 1) / (4 * kThreads), static_cast<int64_t>(8) * sm_count(), 1024}));
  // Layout of the workspace: parts values, parts indices, then the final index.
  char* ws = workspace_as<char>(Workspace::Reduce, parts * (sizeof(float) + sizeof(int64_t)) + 2 * sizeof(int64_t));
  int64_t* pi = reinterpret_cast<int64_t*>(ws);
  int64_t* at = pi + parts;
  float* pv = reinterpret_cast<float*>(at + 1);
  max_partials_kernel<<<parts, kThreads, 0, stream()>>>(cview(x), FlatIndex(x.cols()), total, pv, pi);
  TRICK_CUDA_LAUNCHED(max_partials_kernel);
  max_finish_kernel<<<1, kThreads, 0, stream()>>>(pv, pi, parts, y.data(), at);
  TRICK_CUDA_LAUNCHED(max_finish_kernel);
  if (argmax) {
    TRICK_CHECK(!stream_capturing(), "max: the argmax cannot be read back while the stream is captured");
    TRICK_CUDA_CHECK(cudaMemcpyAsync(argmax, at, sizeof(int64_t), cudaMemcpyDeviceToHost, stream()));
    TRICK_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
}

void sum_per_item(const Tensor& x, bool square, Tensor& y) {
  DeviceGuard g(x.device());
  const int64_t n = x.dim(0), per = n ? x.numel() / n : 0;
  const ContiguousLoad load{x.data(), per};
  if (square)
    reduce_segments<Combine::SumSquares>("sum_per_item", n, per, load, y.data());
  else
    reduce_segments<Combine::Sum>("sum_per_item", n, per, load, y.data());
}

void max_abs_per_item(const Tensor& x, Tensor& y) {
  DeviceGuard g(x.device());
  const int64_t n = x.dim(0), per = n ? x.numel() / n : 0;
  reduce_segments<Combine::MaxAbs>("max_abs_per_item", n, per, ContiguousLoad{x.data(), per}, y.data());
}

void sum_rows(const Tensor& x, Tensor& y, bool accumulate) {
  DeviceGuard g(x.device());
  const int64_t cols = x.cols();
  if (cols == 0) return;
  int row_blocks = 0;
  const double* partials = column_partials<1>("sum_rows", x.rows(), cols, ColumnValue{cview(x)}, row_blocks);
  sum_rows_finish_kernel<<<grid_for(cols, 256), 256, 0, stream()>>>(partials, row_blocks, static_cast<int>(cols),
                                                                    y.data(), accumulate);
  TRICK_CUDA_LAUNCHED(sum_rows_finish_kernel);
}

}  // namespace cuda
}  // namespace trick
