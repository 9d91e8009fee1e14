// Helpers for op tests: comparisons that report where they fail, and a gradient check of a
// differentiable op against central differences of its double-precision reference.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/var.h"
#include "tensor/random.h"

namespace trick {
namespace test {

inline std::vector<double> to_double(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

inline Tensor nan_tensor(const Shape& s) { return Tensor::full(s, std::nanf("")); }

// |got - ref| <= atol + rtol * |ref| everywhere (atol relative to the largest |ref|).
// On failure, prints the first few mismatches with their flat index.
inline void expect_close(const Tensor& got, const std::vector<double>& ref, const std::string& what,
                         double rtol = 1e-4, double atol_rel = 1e-5) {
  const std::vector<float> g = got.to_vector();
  REQUIRE_MESSAGE(g.size() == ref.size(), what << ": " << g.size() << " values, reference has " << ref.size());
  double scale = 0;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  const double atol = atol_rel * std::max(scale, 1e-30);
  int bad = 0;
  std::ostringstream os;
  for (size_t i = 0; i < g.size(); ++i) {
    const double err = std::fabs(g[i] - ref[i]);
    if (!(err <= atol + rtol * std::fabs(ref[i]))) {
      if (bad < 5) os << "  [" << i << "] got " << g[i] << " want " << ref[i] << "\n";
      ++bad;
    }
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << g.size() << " values differ\n" << os.str());
}

// Reference of an op in double: all input values (flattened, in order) -> output values.
using RefFn = std::function<std::vector<double>(const std::vector<std::vector<double>>&)>;
using OpFn = std::function<Var(const std::vector<Var>&)>;

// Runs op forward on `inputs`, backpropagates a random upstream gradient g, and checks
// each gradient-requiring input's gradient against central differences of
// sum(g * ref(inputs)) in double. Also checks the forward against ref. Then runs forward
// and backward once more: the inputs' gradients are defined now, so every backward kernel
// runs with accumulate = true and must add the same gradient to the one already there.
// Random inputs rarely sit on a kink (ReLU at 0, a max-pool tie), so a check that skips
// more than a tenth of its points as kinks fails: it would otherwise check little.
inline void check_op(const std::string& what, std::vector<Var> inputs, const OpFn& op, const RefFn& ref, Rng& rng,
                     GradCheckOptions options = {}, double forward_rtol = 1e-4) {
  std::vector<std::vector<double>> xs;
  for (const Var& v : inputs) xs.push_back(to_double(v.value()));
  Var y = op(inputs);
  const std::vector<double> want = ref(xs);
  expect_close(y.value(), want, what + " forward", forward_rtol);
  Tensor g = randn(y.value().shape(), rng);
  const std::vector<double> gd = to_double(g);
  y.backward(g);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    REQUIRE_MESSAGE(inputs[i].grad().defined(), what << ": input " << i << " got no gradient");
    const std::vector<float> analytic = inputs[i].grad().to_vector();
    auto f = [&](const std::vector<double>& xi) {
      std::vector<std::vector<double>> all = xs;
      all[i] = xi;
      const std::vector<double> out = ref(all);
      double s = 0;
      for (size_t k = 0; k < out.size(); ++k) s += gd[k] * out[k];
      return s;
    };
    const GradCheckReport r = check_gradient(f, xs[i], analytic, options);
    INFO(what << " input " << i << ": checked " << r.checked << ", kinks skipped " << r.skipped_kinks
              << ", max abs error " << r.max_abs_error);
    CHECK_MESSAGE(r.ok(), what << " input " << i << " gradient: " << r.failures << " failures; first "
                               << r.first_failure);
    CHECK_MESSAGE(r.skipped_kinks * 10 <= r.checked + r.skipped_kinks,
                  what << " input " << i << ": " << r.skipped_kinks << " of " << r.checked + r.skipped_kinks
                       << " points skipped as kinks");
  }
  std::vector<std::vector<double>> first(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].requires_grad()) first[i] = to_double(inputs[i].grad());
  Var again = op(inputs);
  again.backward(g);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    std::vector<double> twice = first[i];
    for (double& e : twice) e *= 2;
    expect_close(inputs[i].grad(), twice, what + " input " + std::to_string(i) + " gradient, accumulated", 1e-5,
                 1e-6);
  }
}

}  // namespace test
}  // namespace trick
