#include "tools/lib/rgb8_image.h"

#include <algorithm>

#include "tools/lib/atomic_file.h"
#include "tools/lib/image.h"

namespace trick {

Rgb8Image::Rgb8Image(int w, int h, uint8_t fill) : width(w), height(h) {
  TRICK_CHECK(w >= 0 && h >= 0, "Rgb8Image: negative size ", w, "x", h);
  pixels.assign(static_cast<size_t>(w) * h * 3, fill);
}

void image_dims(const Tensor& t, const char* what, int* h, int* w, int* c) {
  TRICK_CHECK(t.defined(), what, ": undefined tensor");
  const Shape& s = t.shape();
  const bool ok3 = s.ndim == 3;
  const bool ok4 = s.ndim == 4 && s[0] == 1;
  TRICK_CHECK(ok3 || ok4, what, ": expected an image (H, W, C) or (1, H, W, C), got ", s.str());
  const int off = ok4 ? 1 : 0;
  TRICK_CHECK(s[off + 2] == 1 || s[off + 2] == 3, what, ": expected 1 or 3 channels, got ", s[off + 2],
              " (shape ", s.str(), ")");
  TRICK_CHECK(s[off] > 0 && s[off + 1] > 0 && s[off] <= 1 << 15 && s[off + 1] <= 1 << 15, what,
              ": image size ", s[off + 1], "x", s[off], " is empty or too large");
  *h = static_cast<int>(s[off]);
  *w = static_cast<int>(s[off + 1]);
  *c = static_cast<int>(s[off + 2]);
}

Rgb8Image rgb8_from_tensor(const Tensor& image, const char* what) {
  int h, w, c;
  image_dims(image, what, &h, &w, &c);
  const std::vector<float> v = image.to_vector();
  Rgb8Image out(w, h);
  for (size_t i = 0, n = static_cast<size_t>(w) * h; i < n; ++i)
    for (int k = 0; k < 3; ++k) out.pixels[i * 3 + k] = to_8bit(v[i * c + (c == 3 ? k : 0)]);
  return out;
}

Rgb8Image upscale_nearest(const Rgb8Image& img, int factor) {
  TRICK_CHECK(factor >= 1, "upscale_nearest: factor ", factor, " < 1");
  if (factor == 1) return img;
  Rgb8Image out(img.width * factor, img.height * factor);
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) std::copy_n(img.at(x / factor, y / factor), 3, out.at(x, y));
  return out;
}

void save_rgb8_png(const std::string& path, const Rgb8Image& img) {
  TRICK_CHECK(!img.empty() && img.pixels.size() == static_cast<size_t>(img.width) * img.height * 3,
              "cannot write ", path, ": empty or inconsistent image ", img.width, "x", img.height);
  std::string bytes;
  try {
    bytes = encode_png_8bit(img.pixels.data(), img.width, img.height, 3);
  } catch (const Error& e) {
    fail("cannot write ", path, ": ", e.what());
  }
  atomic_write(path, bytes);
}

}  // namespace trick
