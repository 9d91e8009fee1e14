// A small seeded generator whose streams are the same on every platform and compiler
// (std::normal_distribution is not), so runs and tests are reproducible.
#pragma once
#include <cmath>
#include <cstdint>

#include "tensor/tensor.h"

namespace trick {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0x5eed) : state_(seed) {}
  uint64_t next_u64() {  // splitmix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return (next_u64() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {  // Box-Muller
    double u1 = uniform();
    while (u1 <= 1e-300) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next_u64() % static_cast<uint64_t>(n)); }

 private:
  uint64_t state_;
};

// Host tensors filled from the generator.
Tensor randn(const Shape& shape, Rng& rng, float stddev = 1.f);
Tensor rand_uniform(const Shape& shape, Rng& rng, float lo = 0.f, float hi = 1.f);

}  // namespace trick
