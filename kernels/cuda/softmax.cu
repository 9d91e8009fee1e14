// CUDA softmax family: one block per row (rows are few and long: a batch of 1000-class
// logits). The row's maximum and log-sum-exp are reduced over the block in the CPU twin's
// precision (max in float ignoring NaN as std::fmax does, sums in double).
#include <cmath>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/softmax.h"

namespace trick {
namespace cuda {

namespace {

constexpr int kThreads = 256;

// log-sum-exp of row x[0, k), the same on every thread of the block.
__device__ double row_lse(const float* x, int k, float* fscratch, double* dscratch) {
  float m = -INFINITY;
  for (int j = threadIdx.x; j < k; j += kThreads) m = fmaxf(m, x[j]);
  m = block_fmax_all(m, fscratch);
  double s = 0.0;
  for (int j = threadIdx.x; j < k; j += kThreads) s += exp(static_cast<double>(x[j]) - m);
  s = block_sum_all(s, dscratch);
  return m + log(s);
}

// A class index stored as a float, or -1 when it is not one of [0, k).
__device__ __forceinline__ int64_t target_index(float t, int k) {
  return (t >= 0.f && t < static_cast<float>(k) && t == floorf(t)) ? static_cast<int64_t>(t) : -1;
}

__global__ void __launch_bounds__(kThreads) softmax_kernel(ConstRowView x, RowView y, int k, bool log_space) {
  __shared__ float fs[32];
  __shared__ double ds[32];
  const int64_t row = blockIdx.x;
  const float* xr = x.p + row * x.ld;
  float* yr = y.p + row * y.ld;
  const double lse = row_lse(xr, k, fs, ds);
  for (int j = threadIdx.x; j < k; j += kThreads) {
    const float v = static_cast<float>(xr[j] - lse);
    yr[j] = log_space ? v : expf(v);
  }
}

__global__ void __launch_bounds__(kThreads)
    softmax_backward_kernel(ConstRowView y, ConstRowView dy, RowView dx, int k, bool log_space, bool accumulate) {
  __shared__ double ds[32];
  const int64_t row = blockIdx.x;
  const float* p = y.p + row * y.ld;
  const float* g = dy.p + row * dy.ld;
  float* o = dx.p + row * dx.ld;
  double s = 0.0;  // softmax: sum(dy * y); log-softmax: sum(dy)
  for (int j = threadIdx.x; j < k; j += kThreads)
    s += log_space ? static_cast<double>(g[j]) : static_cast<double>(g[j]) * p[j];
  s = block_sum_all(s, ds);
  for (int j = threadIdx.x; j < k; j += kThreads) {
    const float v = log_space ? static_cast<float>(g[j] - exp(static_cast<double>(p[j])) * s)
                              : static_cast<float>(p[j] * (g[j] - s));
    o[j] = accumulate ? o[j] + v : v;
  }
}

__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(ConstRowView logits, const float* targets, RowView probs, float* losses, int k) {
  __shared__ float fs[32];
  __shared__ double ds[32];
  const int64_t row = blockIdx.x;
  const float* xr = logits.p + row * logits.ld;
  float* pr = probs.p + row * probs.ld;
  const double lse = row_lse(xr, k, fs, ds);
  for (int j = threadIdx.x; j < k; j += kThreads) pr[j] = expf(static_cast<float>(xr[j] - lse));
  if (threadIdx.x == 0) {
    const int64_t t = target_index(targets[row], k);
    losses[row] = t >= 0 ? -static_cast<float>(xr[t] - lse) : NAN;  // NaN: not a class index
  }
}

__global__ void __launch_bounds__(kThreads)
    cross_entropy_backward_kernel(ConstRowView probs, const float* targets, const float* dlosses, RowView dlogits,
                                  int k, bool accumulate) {
  const int64_t row = blockIdx.x;
  const float* p = probs.p + row * probs.ld;
  float* o = dlogits.p + row * dlogits.ld;
  const int64_t t = target_index(targets[row], k);
  const float g = t >= 0 ? dlosses[row] : NAN;
  for (int j = threadIdx.x; j < k; j += kThreads) {
    const float v = g * (p[j] - (j == t ? 1.f : 0.f));
    o[j] = accumulate ? o[j] + v : v;
  }
}

void check_rows(const char* op, int64_t n, int64_t k) {
  check_fits_int(op, "row count", n, INT32_MAX);
  check_fits_int(op, "row length", k);
}

// The CPU dispatcher validates host targets; device targets are read back and checked
// here with the same message (skipped while a graph is captured: the kernels then write
// NaN for a bad target instead of reading out of bounds).
void check_targets(const char* op, const Tensor& targets, int64_t k) {
  if (stream_capturing() || targets.numel() == 0) return;
  TRICK_CUDA_CHECK(cudaStreamSynchronize(stream()));
  const std::vector<float> t = targets.to_vector();
  for (size_t i = 0; i < t.size(); ++i)
    TRICK_CHECK(t[i] >= 0 && t[i] < k && t[i] == static_cast<float>(static_cast<int64_t>(t[i])), op, ": target ", t[i],
                " of item ", i, " is not a class index in [0, ", k, ")");
}

}  // namespace

void softmax(const Tensor& x, Tensor& y) {
  DeviceGuard g(x.device());
  const int64_t n = x.dim(0), k = x.dim(1);
  check_rows("softmax", n, k);
  if (n == 0 || k == 0) return;
  softmax_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(cview(x), view(y), static_cast<int>(k), false);
  TRICK_CUDA_LAUNCHED(softmax_kernel);
}

void log_softmax(const Tensor& x, Tensor& y) {
  DeviceGuard g(x.device());
  const int64_t n = x.dim(0), k = x.dim(1);
  check_rows("log_softmax", n, k);
  if (n == 0 || k == 0) return;
  softmax_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(cview(x), view(y), static_cast<int>(k), true);
  TRICK_CUDA_LAUNCHED(softmax_kernel);
}

void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  DeviceGuard g(y.device());
  const int64_t n = y.dim(0), k = y.dim(1);
  check_rows("softmax_backward", n, k);
  if (n == 0 || k == 0) return;
  softmax_backward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(cview(y), cview(dy), view(dx),
                                                                               static_cast<int>(k), false, accumulate);
  TRICK_CUDA_LAUNCHED(softmax_backward_kernel);
}

void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx, bool accumulate) {
  DeviceGuard g(y.device());
  const int64_t n = y.dim(0), k = y.dim(1);
  check_rows("log_softmax_backward", n, k);
  if (n == 0 || k == 0) return;
  softmax_backward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(cview(y), cview(dy), view(dx),
                                                                               static_cast<int>(k), true, accumulate);
  TRICK_CUDA_LAUNCHED(softmax_backward_kernel);
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& probs, Tensor& losses) {
  DeviceGuard g(logits.device());
  const int64_t n = logits.dim(0), k = logits.dim(1);
  check_rows("cross_entropy", n, k);
  if (n == 0) return;
  check_targets("cross_entropy", targets, k);
  cross_entropy_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(cview(logits), targets.data(), view(probs),
                                                                            losses.data(), static_cast<int>(k));
  TRICK_CUDA_LAUNCHED(cross_entropy_kernel);
}

void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const Tensor& dlosses, Tensor& dlogits,
                            bool accumulate) {
  DeviceGuard g(probs.device());
  const int64_t n = probs.dim(0), k = probs.dim(1);
  check_rows("cross_entropy_backward", n, k);
  if (n == 0 || k == 0) return;
  check_targets("cross_entropy_backward", targets, k);
  cross_entropy_backward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream()>>>(
      cview(probs), targets.data(), dlosses.data(), view(dlogits), static_cast<int>(k), accumulate);
  TRICK_CUDA_LAUNCHED(cross_entropy_backward_kernel);
}

}  // namespace cuda
}  // namespace trick
