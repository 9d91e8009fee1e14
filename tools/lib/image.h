// Image files <-> float pixels in [0, 1], (H, W, C) with C = 3 (RGB) or 1 (gray).
//
// Decoding: JPEG (baseline, progressive, gray, CMYK) with libjpeg-turbo set up as PIL sets it
// up, PNG with libpng, GIF (first frame) with giflib, WebP (lossy, lossless, animated: the
// first frame) with libwebp's decoder as PIL uses it, BMP with stb_image. Pixels are converted
// the way PIL 9.4's convert("RGB") / convert("L") converts: gray is replicated to RGB, alpha
// and transparency are dropped (not composited), CMYK -> RGB is Pillow's cmyk2rgb, RGB -> L
// is ITU-R 601-2 luma in PIL's fixed point. 16-bit PNGs keep their high byte, as PIL does
// for colour ones (PIL clips 16-bit gray to 255 instead: there we differ on purpose). EXIF
// orientation is ignored, as PIL and torchvision ignore it. The pixels equal PIL's exactly
// (tests/images_check.py).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace trick {

// Images larger than this are refused before decoding (a small file can declare a huge size).
constexpr int64_t kMaxImagePixels = 50'000'000;
constexpr int64_t kMaxImageSide = 32768;

// An image file decoded: 8-bit samples, `channels` interleaved (1: gray, 3: RGB), alpha and
// transparency already dropped; what the file holds before the conversion a model needs.
struct DecodedImage {
  int width = 0, height = 0, channels = 0;
  std::unique_ptr<uint8_t[]> pixels;  // not zeroed: a truncated file fails before most pages are touched
  void allocate(int w, int h, int c);
  // Some pixel has R, G and B not all equal (a gray model would see less than the file holds).
  bool in_colour() const;
};

// Returns (H, W, channels) float32 on the host, value / 255. channels is 3 or 1.
// Throws trick::Error naming the file: missing, empty, not an image, truncated or corrupt,
// too large. The same as image_tensor(read_image_file(path), channels).
Tensor load_image(const std::string& path, int channels = 3);
DecodedImage read_image_file(const std::string& path);
// (H, W, channels) float32, value / 255, converted as PIL converts: gray replicated to RGB,
// RGB to gray by PIL's convert("L") luma.
Tensor image_tensor(const DecodedImage& image, int channels);

// The images a command was given, read and decoded before its model loads, so that a missing
// or corrupt file fails at once, not after the weights (and a GPU) have loaded. In the order
// given, until `budget` bytes of pixels are held (a long list of photos for classify is not
// all kept in memory: the files past the budget are read when taken).
class ImageFiles {
 public:
  explicit ImageFiles(const std::vector<std::string>& paths, size_t budget = size_t(1) << 30);
  // The decoded file: the one read ahead (released from here), or read now.
  DecodedImage take(const std::string& path);

 private:
  std::map<std::string, DecodedImage> kept_;
};
// The same from bytes in memory; `name` is used in error messages. max_pixels lowers the size
// limit (the fuzzer uses it: a 600-byte GIF may legally declare a 50-megapixel canvas).
Tensor decode_image(const std::string& bytes, const std::string& name, int channels = 3,
                    int64_t max_pixels = kMaxImagePixels);
DecodedImage decode_image_file(const std::string& bytes, const std::string& name,
                               int64_t max_pixels = kMaxImagePixels);

// The formats this build decodes and the libraries that decode them, with their versions:
// "PNG (libpng 1.6.39), JPEG (libjpeg-turbo 2.1.5), ..." (for `trick info`).
std::string image_decoders();

// x -> round(clamp(x, 0, 1) * 255); NaN -> 0. The quantisation every saved image goes through.
uint8_t to_8bit(float x);
// The float image (same shape, on the host) of the 8-bit values save_png would write.
Tensor quantize_8bit(const Tensor& image);

// Writes an 8-bit PNG, atomically. image: (H, W, 3) RGB or (H, W, 1) gray (a leading
// batch dim of 1 is accepted), any device and strides.
void save_png(const std::string& path, const Tensor& image);
// The PNG file's bytes.
std::string encode_png(const Tensor& image);
// The PNG file's bytes for 8-bit pixels, rows of w * c bytes, c = 3 (RGB) or 1 (gray):
// libpng, zlib level 1 (speed: the attacked photo is written at its own size).
std::string encode_png_8bit(const uint8_t* px, int64_t w, int64_t h, int c);

}  // namespace trick
