// CPU batch norm. Statistics accumulate in double per block of rows and the blocks are
// combined in order, so the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/norm.h"

namespace trick {
namespace cpu {

namespace {
// sums[c] = sum over rows of f(row, c), in double, parallel over rows.
template <typename F>
std::vector<double> column_sums(int64_t rows, int64_t c, F f) {
  const int64_t per = std::max<int64_t>(64, 32768 / std::max<int64_t>(c, 1));
  const int64_t blocks = std::max<int64_t>(1, (rows + per - 1) / per);
  std::vector<double> partial(static_cast<size_t>(blocks * c), 0.0);
  parallel_for(blocks, [&](int64_t b) {
    double* acc = partial.data() + b * c;
    for (int64_t r = b * per; r < std::min(rows, (b + 1) * per); ++r) f(r, acc);
  });
  std::vector<double> sums(static_cast<size_t>(c), 0.0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t j = 0; j < c; ++j) sums[j] += partial[b * c + j];
  return sums;
}

// f(r) for every row, split over the CPU threads.
template <typename F>
void each_row(int64_t rows, int64_t c, F f) {
  parallel_range(rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(c, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) f(r);
  });
}
}  // namespace

void batch_norm_train_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, float momentum,
                              Tensor& running_mean, Tensor& running_var, Tensor& y, Tensor& save_mean,
                              Tensor& save_invstd) {
  const int64_t rows = x.rows(), c = x.cols(), xld = x.ld(), yld = y.ld();
  const float* xp = x.data();
  const std::vector<double> sum = column_sums(rows, c, [&](int64_t r, double* acc) {
    for (int64_t j = 0; j < c; ++j) acc[j] += xp[r * xld + j];
  });
  std::vector<double> mean(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; ++j) mean[j] = sum[j] / rows;
  const std::vector<double> sq = column_sums(rows, c, [&](int64_t r, double* acc) {
    for (int64_t j = 0; j < c; ++j) {
      const double d = xp[r * xld + j] - mean[j];
      acc[j] += d * d;
    }
  });
  std::vector<float> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; ++j) {
    const double var = sq[j] / rows;
    const double invstd = 1.0 / std::sqrt(var + eps);
    save_mean.data()[j] = static_cast<float>(mean[j]);
    save_invstd.data()[j] = static_cast<float>(invstd);
    scale[j] = static_cast<float>(gamma.data()[j] * invstd);
    shift[j] = static_cast<float>(beta.data()[j] - mean[j] * gamma.data()[j] * invstd);
    running_mean.data()[j] = static_cast<float>((1.0 - momentum) * running_mean.data()[j] + momentum * mean[j]);
    running_var.data()[j] =
        static_cast<float>((1.0 - momentum) * running_var.data()[j] + momentum * sq[j] / (rows - 1));
  }
  float* yp = y.data();
  each_row(rows, c, [&](int64_t r) {
    for (int64_t j = 0; j < c; ++j) yp[r * yld + j] = xp[r * xld + j] * scale[j] + shift[j];
  });
}

void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& save_mean,
                         const Tensor& save_invstd, Tensor& dx, bool accumulate_x, Tensor& dgamma, Tensor& dbeta,
                         bool accumulate_params) {
  const int64_t rows = x.rows(), c = x.cols(), xld = x.ld(), gld = dy.ld();
  const float *xp = x.data(), *gp = dy.data(), *mp = save_mean.data(), *ip = save_invstd.data();
  // sum(dy) and sum(dy * xhat) per channel
  const std::vector<double> sums = column_sums(rows, 2 * c, [&](int64_t r, double* acc) {
    for (int64_t j = 0; j < c; ++j) {
      const double g = gp[r * gld + j];
      acc[j] += g;
      acc[c + j] += g * (xp[r * xld + j] - mp[j]) * ip[j];
    }
  });
  if (dbeta.defined())
    for (int64_t j = 0; j < c; ++j)
      dbeta.data()[j] = static_cast<float>((accumulate_params ? dbeta.data()[j] : 0.0) + sums[j]);
  if (dgamma.defined())
    for (int64_t j = 0; j < c; ++j)
      dgamma.data()[j] = static_cast<float>((accumulate_params ? dgamma.data()[j] : 0.0) + sums[c + j]);
  if (!dx.defined()) return;
  // dx = gamma * invstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat))
  float* dp = dx.data();
  const int64_t dld = dx.ld();
  std::vector<float> k1(static_cast<size_t>(c)), k2(static_cast<size_t>(c)), k3(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; ++j) {
    k1[j] = static_cast<float>(gamma.data()[j] * ip[j]);
    k2[j] = static_cast<float>(sums[j] / rows);
    k3[j] = static_cast<float>(sums[c + j] / rows);
  }
  each_row(rows, c, [&](int64_t r) {
    for (int64_t j = 0; j < c; ++j) {
      const float xhat = (xp[r * xld + j] - mp[j]) * ip[j];
      const float v = k1[j] * (gp[r * gld + j] - k2[j] - xhat * k3[j]);
      dp[r * dld + j] = accumulate_x ? dp[r * dld + j] + v : v;
    }
  });
}

void channel_affine(const Tensor& x, const Tensor& scale, const Tensor& shift, bool relu, Tensor& y) {
  const int64_t rows = x.rows(), c = x.cols(), xld = x.ld(), yld = y.ld();
  const float *xp = x.data(), *s = scale.data(), *t = shift.data();
  float* yp = y.data();
  each_row(rows, c, [&](int64_t r) {
    for (int64_t j = 0; j < c; ++j) {
      const float v = xp[r * xld + j] * s[j] + t[j];
      yp[r * yld + j] = relu && v < 0.f ? 0.f : v;
    }
  });
}

}  // namespace cpu
}  // namespace trick
