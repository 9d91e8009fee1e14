// Gradient checking against central differences in double precision.
//
// The function is given in double (a plain-loop reference of the op, contracted with an
// upstream gradient to a scalar), the gradient to check comes from our float32 backward.
// A point where the function has a kink between x - h and x + h (ReLU at 0, a max-pool
// tie) is skipped: for a piecewise-linear function the second difference
// f(x+h) + f(x-h) - 2 f(x) is exactly the error such a kink puts into the central
// difference (times 2h), so points where it would matter are detected, not guessed.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace trick {

struct GradCheckOptions {
  double h = 1e-6;        // step, in double
  double atol = 1e-5;     // |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-3;
  int64_t max_points = 400;  // check at most this many coordinates (a fixed-seed random sample)
};

struct GradCheckReport {
  int64_t checked = 0;
  int64_t skipped_kinks = 0;
  int64_t failures = 0;
  double max_abs_error = 0;
  std::string first_failure;  // "x[17]: analytic 0.25 numeric 0.5"
  bool ok() const { return failures == 0 && checked > 0; }
};

GradCheckReport check_gradient(const std::function<double(const std::vector<double>&)>& f,
                               const std::vector<double>& x, const std::vector<float>& analytic,
                               const GradCheckOptions& options = {});

}  // namespace trick
