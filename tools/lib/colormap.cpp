#include "tools/lib/colormap.h"

#include <algorithm>
#include <cmath>

namespace trick {

// Ends chosen bright and saturated so that small changes stand out against the grey
// middle; linear in between, so the map is symmetric in brightness around grey.
static const float kNegative[3] = {20.f, 90.f, 255.f};
static const float kZero[3] = {128.f, 128.f, 128.f};
static const float kPositive[3] = {255.f, 45.f, 20.f};

void diverging_color(float t, uint8_t rgb[3]) {
  if (!(t == t)) t = 0.f;
  t = std::clamp(t, -1.f, 1.f);
  const float* end = t < 0 ? kNegative : kPositive;
  const float a = std::fabs(t);
  for (int k = 0; k < 3; ++k) rgb[k] = static_cast<uint8_t>(std::lround(kZero[k] + a * (end[k] - kZero[k])));
}

DeltaStyle resolve_delta_style(DeltaStyle style, int channels) {
  if (style != DeltaStyle::kAuto) return style;
  return channels == 3 ? DeltaStyle::kPerChannel : DeltaStyle::kDiverging;
}

float max_abs_value(const Tensor& t) {
  float m = 0.f;
  for (float v : t.to_vector())
    if (std::isfinite(v)) m = std::max(m, std::fabs(v));
  return m;
}

Rgb8Image delta_to_rgb8(const Tensor& delta, float scale, DeltaStyle style, const char* what) {
  int h, w, c;
  image_dims(delta, what, &h, &w, &c);
  Rgb8Image out(w, h, kNoChangeGrey);
  if (!(scale > 0.f) || !std::isfinite(scale)) return out;
  const std::vector<float> v = delta.to_vector();
  const float inv = 1.f / scale;
  style = resolve_delta_style(style, c);
  for (size_t i = 0, n = static_cast<size_t>(w) * h; i < n; ++i) {
    const float* d = &v[i * c];
    uint8_t* p = &out.pixels[i * 3];
    if (style == DeltaStyle::kPerChannel) {
      for (int k = 0; k < 3; ++k) {
        float t = d[c == 3 ? k : 0] * inv;
        if (!(t == t)) t = 0.f;
        t = std::clamp(t, -1.f, 1.f);
        // 127.5 +- 127.5 would put zero between two levels; zero must be exactly kNoChangeGrey.
        p[k] = static_cast<uint8_t>(std::lround(t < 0 ? kNoChangeGrey + t * kNoChangeGrey
                                                       : kNoChangeGrey + t * (255 - kNoChangeGrey)));
      }
    } else {
      float mean = 0.f;
      for (int k = 0; k < c; ++k) mean += d[k];
      diverging_color(mean / c * inv, p);
    }
  }
  return out;
}

}  // namespace trick
