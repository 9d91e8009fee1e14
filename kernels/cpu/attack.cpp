// CPU twins of the attack's update and projection steps.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attack.h"
#include "kernels/cpu/parallel.h"

namespace trick {
namespace cpu {

namespace {
inline float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }
// std::fmax / std::fmin for a bound b that is not NaN: a NaN a gives b, as they do. Plain
// comparisons, so the loops vectorise (without -ffast-math the std ones are libm calls:
// on a 12-megapixel photo the projection spent most of its time in them).
inline float max_of(float a, float b) { return a > b ? a : b; }
inline float min_of(float a, float b) { return a < b ? a : b; }
inline float sgn(float v) { return static_cast<float>((v > 0.f) - (v < 0.f)); }
constexpr int64_t kGrain = 65536;  // elements per parallel block: below two of them, one thread

// f(i) for i in [0, n), split over the CPU threads.
template <typename F>
void each(int64_t n, F f) {
  parallel_range(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}
}  // namespace

void sign_step(Tensor& x, const Tensor& g, float alpha) {
  float* p = x.data();
  const float* d = g.data();
  const int64_t n = x.numel();
  each(n, [&](int64_t i) { p[i] = clamp01(p[i] - alpha * sgn(d[i])); });
}

void momentum_accumulate(Tensor& m, const Tensor& g, float mu, float scale) {
  float* p = m.data();
  const float* d = g.data();
  const int64_t n = m.numel();
  each(n, [&](int64_t i) { p[i] = mu * p[i] + scale * d[i]; });
}

void adam_step(Tensor& x, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2, float eps, int t,
               bool pixels) {
  float *p = x.data(), *mp = m.data(), *vp = v.data();
  const float* d = g.data();
  const int64_t n = x.numel();
  const float c1 = 1.f - std::pow(b1, static_cast<float>(t)), c2 = 1.f - std::pow(b2, static_cast<float>(t));
  each(n, [&](int64_t i) {
    mp[i] = b1 * mp[i] + (1.f - b1) * d[i];
    vp[i] = b2 * vp[i] + (1.f - b2) * d[i] * d[i];
    const float u = p[i] - lr * (mp[i] / c1) / (std::sqrt(vp[i] / c2) + eps);
    p[i] = pixels ? clamp01(u) : u;
  });
}

void project_linf(Tensor& x, const Tensor& x0, float eps) {
  float* p = x.data();
  const float* o = x0.data();
  const int64_t n = x.numel();
  each(n, [&](int64_t i) {
    const float lo = max_of(o[i] - eps, 0.f), hi = min_of(o[i] + eps, 1.f);
    p[i] = min_of(max_of(p[i], lo), hi);
  });
}

void project_l2(Tensor& x, const Tensor& x0, float eps) {
  float* p = x.data();
  const float* o = x0.data();
  const int64_t n = x.numel();
  // Partial sums over fixed blocks, added in block order: the same result on any thread count.
  const int64_t blocks = (n + kGrain - 1) / kGrain;
  std::vector<double> part(static_cast<size_t>(blocks), 0.0);
  parallel_for(blocks, [&](int64_t b) {
    double s = 0.0;
    for (int64_t i = b * kGrain; i < std::min(n, (b + 1) * kGrain); ++i)
      s += static_cast<double>(p[i] - o[i]) * (p[i] - o[i]);
    part[b] = s;
  });
  double s = 0.0;
  for (double v : part) s += v;
  const double norm = std::sqrt(s);
  const float k = norm > eps ? static_cast<float>(eps / norm) : 1.f;
  each(n, [&](int64_t i) { p[i] = clamp01(o[i] + k * (p[i] - o[i])); });
}

void round_to_8bit(Tensor& x) {
  float* p = x.data();
  const int64_t n = x.numel();
  each(n, [&](int64_t i) {
    // As tools/lib/image.cpp's to_8bit (what save_png writes): NaN -> 0, halves away from 0
    // (std::lround of v * 255, which is >= 0: its floor after adding 0.5, exact in double).
    const float v = p[i] > 0.f ? (p[i] >= 1.f ? 1.f : p[i]) : 0.f;
    p[i] = static_cast<float>(static_cast<int>(static_cast<double>(v * 255.f) + 0.5)) / 255.f;
  });
}

}  // namespace cpu
}  // namespace trick
