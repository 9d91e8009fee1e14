#include "tools/lib/number_format.h"

#include <cmath>
#include <cstdio>

namespace trick {

std::string format_number(const char* printf_format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, printf_format, v);
  return buf;
}

std::string format_percent(float p) {
  const double v = 100.0 * p;
  if (!(v == v)) return "n/a";
  if (v >= 0.1 || v == 0) return format_number("%.1f%%", v);
  return format_number("%.2g%%", v);
}

std::string format_levels(double v) {
  if (!std::isfinite(v)) return "n/a";
  if (std::fabs(v - std::round(v)) < 1e-3) return format_number("%.0f", v);
  return std::fabs(v) < 10 ? format_number("%.2g", v) : format_number("%.1f", v);
}

std::string format_tick(double v, double step) {
  int decimals = 0;
  for (double scaled = step; decimals < 6 && std::fabs(scaled - std::round(scaled)) > 1e-6 * std::fmax(1.0, scaled);
       scaled *= 10)
    ++decimals;
  if (std::fabs(v) < step * 1e-6) v = 0;  // no "-0"
  const double a = std::fabs(v);
  if (a != 0 && (a >= 1e6 || a < 1e-4)) return format_number("%.1e", v);
  char f[16];
  std::snprintf(f, sizeof f, "%%.%df", decimals);
  return format_number(f, v);
}

}  // namespace trick
