#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "tensor/error.h"

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
  const int64_t step = std::max<int64_t>(1, n / std::max<int64_t>(1, o.max_points));
  for (int64_t i = (n - 1) % step; i < n; i += step) {
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
