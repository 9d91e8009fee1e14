// Signed differences as colours: grey means "no change", so a picture of a perturbation
// reads the same in the animation's delta panel and in perturbation.png.
#pragma once
#include <cstdint>

#include "tensor/tensor.h"
#include "tools/lib/rgb8_image.h"

namespace trick {

enum class DeltaStyle {
  kAuto,        // per channel for RGB images, diverging for grey ones
  kPerChannel,  // each channel 0.5 + 0.5 * d / scale: the colour that was added, on grey
  kDiverging,   // channel mean through the blue-grey-red map
};

// Grey level every style uses for a zero difference.
constexpr uint8_t kNoChangeGrey = 128;

// t in [-1, 1] (clamped; NaN counts as 0): blue at -1, grey (128) at 0, red at +1.
void diverging_color(float t, uint8_t rgb[3]);

// The style actually used for an image with `channels` channels.
DeltaStyle resolve_delta_style(DeltaStyle style, int channels);

// Largest |value| of a tensor; NaN and infinities are ignored.
float max_abs_value(const Tensor& t);

// delta: (H, W, C) or (1, H, W, C), signed, in pixel units ([-1, 1]). |delta| = scale maps to
// full colour (larger values saturate). scale <= 0 is treated as "nothing to show": all grey.
Rgb8Image delta_to_rgb8(const Tensor& delta, float scale, DeltaStyle style, const char* what = "delta");

}  // namespace trick
