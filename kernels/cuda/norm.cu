// CUDA batch norm, NHWC: per-channel statistics with the deterministic column reductions
// of kernels/cuda/reduce.cuh (double partials, two passes over x for the variance, as the
// CPU twin does), a per-channel finishing kernel, then one elementwise pass.
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/norm.h"

namespace trick {
namespace cuda {

namespace {

struct SumX {
  ConstRowView x;
  __device__ void operator()(int64_t r, int c, double* v) const { v[0] = x.at(r, c); }
};

struct SumSquaredDeviation {
  ConstRowView x;
  const double* mean;
  __device__ void operator()(int64_t r, int c, double* v) const {
    const double d = x.at(r, c) - mean[c];
    v[0] = d * d;
  }
};

// sum(dy) and sum(dy * xhat), with xhat's difference taken in float as the CPU does.
struct BackwardSums {
  ConstRowView x, dy;
  const float *mean, *invstd;
  __device__ void operator()(int64_t r, int c, double* v) const {
    const double g = dy.at(r, c);
    v[0] = g;
    v[1] = g * (x.at(r, c) - mean[c]) * invstd[c];
  }
};

__global__ void mean_kernel(const double* partials, int row_blocks, int cols, int64_t rows, double* mean) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < cols) mean[c] = column_total(partials, row_blocks, cols, 0, c) / static_cast<double>(rows);
}

struct TrainStats {
  const float *gamma, *beta;
  float eps, momentum;
  int64_t rows;
  float *running_mean, *running_var, *save_mean, *save_invstd, *scale, *shift;
};

__global__ void train_stats_kernel(const double* partials, int row_blocks, int cols, const double* mean, TrainStats s) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const double sq = column_total(partials, row_blocks, cols, 0, c);
  const double var = sq / static_cast<double>(s.rows);
  const double invstd = 1.0 / sqrt(var + s.eps);
  const double m = mean[c];
  s.save_mean[c] = static_cast<float>(m);
  s.save_invstd[c] = static_cast<float>(invstd);
  s.scale[c] = static_cast<float>(s.gamma[c] * invstd);
  s.shift[c] = static_cast<float>(s.beta[c] - m * s.gamma[c] * invstd);
  s.running_mean[c] = static_cast<float>((1.0 - s.momentum) * s.running_mean[c] + s.momentum * m);
  s.running_var[c] =
      static_cast<float>((1.0 - s.momentum) * s.running_var[c] + s.momentum * sq / static_cast<double>(s.rows - 1));
}

struct BackwardStats {
  const float *gamma, *invstd;
  int64_t rows;
  float *dgamma, *dbeta;  // either may be null
  bool accumulate_params;
  float *k1, *k2, *k3;
};

__global__ void backward_stats_kernel(const double* partials, int row_blocks, int cols, BackwardStats s) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const double sum_dy = column_total(partials, row_blocks, cols, 0, c);
  const double sum_dy_xhat = column_total(partials, row_blocks, cols, 1, c);
  if (s.dbeta) s.dbeta[c] = static_cast<float>((s.accumulate_params ? s.dbeta[c] : 0.0) + sum_dy);
  if (s.dgamma) s.dgamma[c] = static_cast<float>((s.accumulate_params ? s.dgamma[c] : 0.0) + sum_dy_xhat);
  s.k1[c] = static_cast<float>(s.gamma[c] * s.invstd[c]);
  s.k2[c] = static_cast<float>(sum_dy / static_cast<double>(s.rows));
  s.k3[c] = static_cast<float>(sum_dy_xhat / static_cast<double>(s.rows));
}

struct AffineF {
  ConstRowView x;
  RowView y;
  const float *scale, *shift;
  bool relu;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float v = x.at(r, c) * scale[c] + shift[c];
    y.at(r, c) = relu && v < 0.f ? 0.f : v;  // the CPU twin's test: NaN passes through
  }
};

// dx = k1 * (dy - k2 - xhat * k3) with xhat = (x - mean) * invstd
struct BackwardDx {
  ConstRowView x, dy;
  RowView dx;
  const float *mean, *invstd, *k1, *k2, *k3;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    const float xhat = (x.at(r, c) - mean[c]) * invstd[c];
    const float v = k1[c] * (dy.at(r, c) - k2[c] - xhat * k3[c]);
    float& o = dx.at(r, c);
    o = accumulate ? o + v : v;
  }
};

constexpr int kThreads = 256;

}  // namespace

void batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, float momentum,
                              Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                              Tensor& save_invstd) {
  DeviceGuard guard(x.device());
  const char* op = "batch_norm";
  const int64_t rows = x.rows(), c = x.cols();
  check_fits_int(op, "channel count", c);
  if (c == 0) return;
  // Staging: the mean (double) then scale and shift (float).
  char* staging = workspace_as<char>(Workspace::Staging, c * (sizeof(double) + 2 * sizeof(float)));
  double* mean = reinterpret_cast<double*>(staging);
  float* scale = reinterpret_cast<float*>(mean + c);
  float* shift = scale + c;
  const int ci = static_cast<int>(c);
  const unsigned grid = grid_for(c, kThreads);

  int row_blocks = 0;
  const double* partials = column_partials<1>(op, rows, c, SumX{cview(x)}, row_blocks);
  mean_kernel<<<grid, kThreads, 0, stream()>>>(partials, row_blocks, ci, rows, mean);
  TRICK_CUDA_LAUNCHED(mean_kernel);

  partials = column_partials<1>(op, rows, c, SumSquaredDeviation{cview(x), mean}, row_blocks);
  const TrainStats s{
      gamma.data(),     beta.data(),        eps,   momentum, rows, running_mean.data(), running_var.data(),
      save_mean.data(), save_invstd.data(), scale, shift};
  train_stats_kernel<<<grid, kThreads, 0, stream()>>>(partials, row_blocks, ci, mean, s);
  TRICK_CUDA_LAUNCHED(train_stats_kernel);

  launch_map(op, rows, c, AffineF{cview(x), view(y), scale, shift, false});
}

void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, Tensor& dx, bool accumulate_x, Tensor& dgamma, Tensor& dbeta,
                         bool accumulate_params) {
  DeviceGuard guard(x.device());
  const char* op = "batch_norm_backward";
  const int64_t rows = x.rows(), c = x.cols();
  check_fits_int(op, "channel count", c);
  if (c == 0) return;
  float* k = workspace_as<float>(Workspace::Staging, 3 * c);
  int row_blocks = 0;
  const double* partials = column_partials<2>(
      op, rows, c, BackwardSums{cview(x), cview(dy), save_mean.data(), save_invstd.data()}, row_blocks);
  const BackwardStats s{gamma.data(),
                        save_invstd.data(),
                        rows,
                        dgamma.defined() ? dgamma.data() : nullptr,
                        dbeta.defined() ? dbeta.data() : nullptr,
                        accumulate_params,
                        k,
                        k + c,
                        k + 2 * c};
  backward_stats_kernel<<<grid_for(c, kThreads), kThreads, 0, stream()>>>(partials, row_blocks, static_cast<int>(c), s);
  TRICK_CUDA_LAUNCHED(backward_stats_kernel);
  if (!dx.defined()) return;
  launch_map(op, rows, c,
             BackwardDx{cview(x), cview(dy), view(dx), save_mean.data(), save_invstd.data(), k, k + c, k + 2 * c,
                        accumulate_x});
}

void channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift, bool relu, Tensor& y) {
  DeviceGuard guard(x.device());
  launch_map("channel_affine", x.rows(), x.cols(), AffineF{cview(x), view(y), scale.data(), shift.data(), relu});
}

}  // namespace cuda
}  // namespace trick
