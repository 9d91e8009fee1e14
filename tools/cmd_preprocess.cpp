// trick preprocess: an image file -> the model input it becomes, as a .npy (H, W, C)
// float32 array in [0, 1]. For users who want to see what the model sees, and for the
// parity tests against PIL/torchvision.
#include <cstdio>
#include <string>

#include "models/preprocess.h"
#include "tools/command.h"
#include "tools/lib/image.h"
#include "tools/lib/npy.h"

namespace trick::cmd_preprocess {
namespace {

struct Options {
  std::string image, out, input_size;
  int resize_shorter = 342, crop = 299;  // torchvision's Inception v3 evaluation transform
  bool gray = false;
};

// "299" or "299x299" (height x width) -> sizes; throws otherwise.
void parse_size(const std::string& s, int* h, int* w) {
  const size_t x = s.find('x');
  try {
    size_t used = 0;
    if (x == std::string::npos) {
      *h = *w = std::stoi(s, &used);
      if (used != s.size()) throw std::invalid_argument(s);
    } else {
      *h = std::stoi(s.substr(0, x), &used);
      if (used != x) throw std::invalid_argument(s);
      *w = std::stoi(s.substr(x + 1), &used);
      if (used != s.size() - x - 1) throw std::invalid_argument(s);
    }
  } catch (const std::logic_error&) {
    fail("--input-size: expected 'raw', N or HxW, got '", s, "'");
  }
  TRICK_CHECK(*h >= 1 && *w >= 1, "--input-size: sizes must be positive, got '", s, "'");
}

int run(const Options& o) {
  const Tensor pixels = load_image(o.image, o.gray ? 1 : 3);  // (H, W, C)
  const int h = static_cast<int>(pixels.dim(0)), w = static_cast<int>(pixels.dim(1));
  const int c = static_cast<int>(pixels.dim(2));
  Preprocess p;
  if (o.input_size != "raw") p.resize_shorter = o.resize_shorter, p.crop = o.crop;
  const PreprocessPlan plan = plan_preprocess(h, w, p);
  int input_h = plan.out_h, input_w = plan.out_w;
  if (!o.input_size.empty() && o.input_size != "raw") parse_size(o.input_size, &input_h, &input_w);

  NoGradScope no_grad;
  const Var x(pixels.reshape(Shape{1, h, w, c}));
  const Var y = apply_preprocess(x, p, input_h, input_w);
  save_npy(o.out, y.value().reshape(Shape{input_h, input_w, c}));
  std::printf("%s: %dx%d %s", o.image.c_str(), h, w, c == 1 ? "gray" : "RGB");
  if (p.resize_shorter) std::printf(", resized to %dx%d", plan.resized_h, plan.resized_w);
  if (p.crop) std::printf(", centre crop %dx%d at (%d, %d)", p.crop, p.crop, plan.crop_top, plan.crop_left);
  std::printf(" -> %s (%d, %d, %d) float32\n", o.out.c_str(), input_h, input_w, c);
  return 0;
}

const bool registered = register_command(
    {"preprocess", "Write the model input an image becomes (resize + centre crop) as a .npy array",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("image", o->image, "Image file (PNG, JPEG, BMP, GIF, WebP)")->required();
       app.add_option("--out,-o", o->out, "Output .npy file: (H, W, C) float32 pixels in [0, 1]")->required();
       auto* resize = app.add_option("--resize-shorter", o->resize_shorter,
                                     "Resize the shorter side to this (antialiased bilinear, as PIL on a float image); "
                                     "0: no resize")
                          ->capture_default_str()
                          ->check(CLI::Range(0, static_cast<int>(kMaxImageSide)));
       auto* crop = app.add_option("--crop", o->crop, "Centre crop of this size; 0: no crop")
                        ->capture_default_str()
                        ->check(CLI::Range(0, static_cast<int>(kMaxImageSide)));
       auto* size = app.add_option("--input-size", o->input_size,
                                   "'raw': the decoded image as is (no resize, no crop); N or HxW: the size the "
                                   "result must have");
       app.add_flag("--gray", o->gray, "Load as one gray channel (PIL's convert('L')) instead of RGB");
       return [o, resize, crop, size] {
         TRICK_CHECK(!(size->count() && o->input_size == "raw" && (resize->count() || crop->count())),
                     "--input-size raw keeps the image as it is: it cannot be combined with --resize-shorter or --crop");
         return run(*o);
       };
     },
     40});

}  // namespace
}  // namespace trick::cmd_preprocess
