#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "tensor/error.h"
#include "tensor/random.h"

namespace trick {

GradCheckReport check_gradient(const std::function<double(const std::vector<double>&)>& f,
                               const std::vector<double>& x, const std::vector<float>& analytic,
                               const GradCheckOptions& o) {
  TRICK_CHECK(analytic.size() == x.size(), "check_gradient: ", analytic.size(), " gradient values for ", x.size(),
              " inputs");
  GradCheckReport report;
  std::vector<double> p = x;
  const double f0 = f(p);
  const int64_t n = static_cast<int64_t>(x.size());
  // Which coordinates: all of them, or max_points drawn without replacement by a fixed-seed
  // shuffle. (Evenly spaced ones would share a factor with the channel count: a step of 6
  // over 3 channels checks one channel only.)
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  const int64_t points = std::min<int64_t>(n, std::max<int64_t>(1, o.max_points));
  Rng rng(0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(n));
  for (int64_t k = 0; k < points && points < n; ++k)  // partial Fisher-Yates
    std::swap(order[k], order[k + rng.below(n - k)]);
  order.resize(static_cast<size_t>(points));
  std::sort(order.begin(), order.end());
  for (const int64_t i : order) {
    p[i] = x[i] + o.h;
    const double fp = f(p);
    p[i] = x[i] - o.h;
    const double fm = f(p);
    p[i] = x[i];
    const double numeric = (fp - fm) / (2 * o.h);
    const double tol = o.atol + o.rtol * std::fabs(numeric);
    const double kink_error = std::fabs(fp + fm - 2 * f0) / (2 * o.h);
    if (kink_error > 0.1 * tol) {
      ++report.skipped_kinks;
      continue;
    }
    ++report.checked;
    const double err = std::fabs(analytic[i] - numeric);
    report.max_abs_error = std::max(report.max_abs_error, err);
    if (!(err <= tol)) {
      if (report.failures++ == 0) {
        std::ostringstream os;
        os << "x[" << i << "]: analytic " << analytic[i] << " numeric " << numeric << " (tolerance " << tol << ")";
        report.first_failure = os.str();
      }
    }
  }
  return report;
}

}  // namespace trick
