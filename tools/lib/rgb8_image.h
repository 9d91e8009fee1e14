// An 8-bit RGB picture: what a rendered frame, the perturbation map and a GIF frame are.
// Converting from the library's float images and writing PNG live here so the renderer and
// the GIF writer share them without depending on each other.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace trick {

struct Rgb8Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // (height, width, 3) row-major, R G B

  Rgb8Image() = default;
  Rgb8Image(int w, int h, uint8_t fill = 0);
  bool empty() const { return width == 0 || height == 0; }
  uint8_t* at(int x, int y) { return &pixels[(static_cast<size_t>(y) * width + x) * 3]; }
  const uint8_t* at(int x, int y) const { return &pixels[(static_cast<size_t>(y) * width + x) * 3]; }
};

// An image tensor (H, W, C) or (1, H, W, C), C = 1 (grey, replicated) or 3 (RGB), values in
// [0, 1] (clamped; NaN becomes 0), rounded to the nearest 8-bit level. Any device or strides.
// `what` names the tensor in errors ("render_frame: image").
Rgb8Image rgb8_from_tensor(const Tensor& image, const char* what = "image");

// Checks an image-like tensor and returns its (H, W, C) as ints; throws naming `what`.
void image_dims(const Tensor& t, const char* what, int* h, int* w, int* c);

// Nearest-neighbour enlargement by an integer factor (keeps small images' pixels crisp).
Rgb8Image upscale_nearest(const Rgb8Image& img, int factor);

// Writes a PNG atomically (temporary + rename). Throws trick::Error naming `path`.
void save_rgb8_png(const std::string& path, const Rgb8Image& img);

}  // namespace trick
