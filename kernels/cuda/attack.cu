// CUDA twins of the attack's update and projection steps (kernels/cpu/attack.cpp): one thread
// per pixel value; the L2 projection reduces ||x - x0|| on the device, so no host sync.
#include <cmath>

#include "kernels/attack.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace trick {
namespace cuda {

namespace {

__device__ __forceinline__ float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }
__device__ __forceinline__ float sgn(float v) { return static_cast<float>((v > 0.f) - (v < 0.f)); }

// scale[0] = min(1, eps / ||x - x0||_2), in one block (images are at most a few million values).
__global__ void __launch_bounds__(1024) l2_scale_kernel(const float* x, const float* x0, int64_t n, float eps,
                                                         float* scale) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double d = static_cast<double>(x[i] - x0[i]);  // the CPU twin's float difference
    s += d * d;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    const double norm = sqrt(s);
    scale[0] = norm > eps ? static_cast<float>(eps / norm) : 1.f;
  }
}

struct SignStepF {
  float* p;
  const float* d;
  float alpha;
  __device__ void operator()(uint32_t, uint32_t i) const { p[i] = clamp01(p[i] - alpha * sgn(d[i])); }
};

struct MomentumF {
  float* m;
  const float* d;
  float mu, scale;
  __device__ void operator()(uint32_t, uint32_t i) const { m[i] = mu * m[i] + scale * d[i]; }
};

struct AdamF {
  float *p, *m, *v;
  const float* d;
  float lr, b1, b2, eps, c1, c2;
  bool pixels;
  __device__ void operator()(uint32_t, uint32_t i) const {
    m[i] = b1 * m[i] + (1.f - b1) * d[i];
    v[i] = b2 * v[i] + (1.f - b2) * d[i] * d[i];
    const float u = p[i] - lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
    p[i] = pixels ? clamp01(u) : u;
  }
};

struct ProjectLinfF {
  float* p;
  const float* o;
  float eps;
  __device__ void operator()(uint32_t, uint32_t i) const {
    const float lo = fmaxf(o[i] - eps, 0.f), hi = fminf(o[i] + eps, 1.f);
    p[i] = fminf(fmaxf(p[i], lo), hi);
  }
};

struct ProjectL2F {
  float* p;
  const float* o;
  const float* k;  // device scalar from l2_scale_kernel
  __device__ void operator()(uint32_t, uint32_t i) const { p[i] = clamp01(o[i] + k[0] * (p[i] - o[i])); }
};

struct RoundF {
  float* p;
  __device__ void operator()(uint32_t, uint32_t i) const {
    // As tools/lib/image.cpp's to_8bit (what save_png writes): NaN -> 0, halves away from 0.
    const float v = p[i] > 0.f ? (p[i] >= 1.f ? 1.f : p[i]) : 0.f;
    p[i] = static_cast<float>(lroundf(v * 255.f)) / 255.f;
  }
};

}  // namespace

void sign_step(Tensor& x, const Tensor& g, float alpha) {
  DeviceGuard guard(x.device());
  launch_map("sign_step", 1, x.numel(), SignStepF{x.data(), g.data(), alpha});
}

void momentum_accumulate(Tensor& m, const Tensor& g, float mu, float scale) {
  DeviceGuard guard(m.device());
  launch_map("momentum_accumulate", 1, m.numel(), MomentumF{m.data(), g.data(), mu, scale});
}

void adam_step(Tensor& x, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, int t,
               bool pixels) {
  DeviceGuard guard(x.device());
  const float c1 = 1.f - std::pow(b1, static_cast<float>(t)), c2 = 1.f - std::pow(b2, static_cast<float>(t));
  launch_map("adam_step", 1, x.numel(), AdamF{x.data(), m.data(), v.data(), g.data(), lr, b1, b2, eps, c1, c2, pixels});
}

void project_linf(Tensor& x, const Tensor& x0, float eps) {
  DeviceGuard guard(x.device());
  launch_map("project_linf", 1, x.numel(), ProjectLinfF{x.data(), x0.data(), eps});
}

void project_l2(Tensor& x, const Tensor& x0, float eps) {
  DeviceGuard guard(x.device());
  Tensor scale = Tensor::empty(Shape{1}, x.device());
  l2_scale_kernel<<<1, 1024, 0, stream()>>>(x.data(), x0.data(), x.numel(), eps, scale.data());
  TRICK_CUDA_LAUNCHED(l2_scale_kernel);
  launch_map("project_l2", 1, x.numel(), ProjectL2F{x.data(), x0.data(), scale.data()});
}

void round_to_8bit(Tensor& x) {
  DeviceGuard guard(x.device());
  launch_map("round_to_8bit", 1, x.numel(), RoundF{x.data()});
}

}  // namespace cuda
}  // namespace trick
