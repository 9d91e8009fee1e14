// The evaluation transform as ops: torchvision 0.14's size arithmetic, Pillow's filter.
#include "models/preprocess.h"

#include <algorithm>

#include "layers/resize.h"

namespace trick {

namespace {

// Python's round() of d / 2.0 for an integer d >= 0: halves go to the even neighbour
// (what torchvision's CenterCrop gets from int(round(...))).
int half_round_even(int d) {
  const int lo = d / 2;
  if (d % 2 == 0) return lo;
  return lo % 2 == 0 ? lo : lo + 1;
}

}  // namespace

PreprocessPlan plan_preprocess(int h, int w, const Preprocess& p) {
  TRICK_CHECK(h >= 1 && w >= 1, "preprocess: empty image (", h, "x", w, ")");
  TRICK_CHECK(p.resize_shorter >= 0 && p.crop >= 0, "preprocess: resize ", p.resize_shorter, " and crop ", p.crop,
              " must be >= 0");
  PreprocessPlan plan;
  plan.resized_h = h, plan.resized_w = w;
  if (p.resize_shorter > 0) {
    // torchvision.transforms.functional._compute_resized_output_size with one size:
    // the long side is int(size * long / short) in floating point.
    const int shorter = std::min(h, w), longer = std::max(h, w);
    const double new_long_d = static_cast<double>(int64_t(p.resize_shorter) * longer) / shorter;
    TRICK_CHECK(new_long_d < (1 << 20), "preprocess: resizing ", h, "x", w, " to shorter side ", p.resize_shorter,
                " makes the longer side ", static_cast<int64_t>(new_long_d), " (too large)");
    const int new_long = static_cast<int>(new_long_d);
    if (w <= h) plan.resized_w = p.resize_shorter, plan.resized_h = new_long;
    else plan.resized_h = p.resize_shorter, plan.resized_w = new_long;
  }
  plan.out_h = plan.resized_h, plan.out_w = plan.resized_w;
  if (p.crop > 0) {
    // torchvision would pad a too-small image with zeros; an image that small would be
    // unrecognisable anyway, so we refuse it instead of attacking padding.
    TRICK_CHECK(p.crop <= plan.resized_h && p.crop <= plan.resized_w, "preprocess: centre crop ", p.crop, "x", p.crop,
                " does not fit in the ", plan.resized_h, "x", plan.resized_w, " image",
                p.resize_shorter > 0 ? " after resizing" : "");
    plan.crop_top = half_round_even(plan.resized_h - p.crop);
    plan.crop_left = half_round_even(plan.resized_w - p.crop);
    plan.out_h = plan.out_w = p.crop;
  }
  return plan;
}

Var apply_preprocess(const Var& image, const Preprocess& p, int input_h, int input_w) {
  TRICK_CHECK(image.defined() && image.value().ndim() == 4, "preprocess: image must be (N, H, W, C), got ",
              image.defined() ? image.shape().str() : std::string("nothing"));
  TRICK_CHECK(image.shape()[1] <= (1 << 24) && image.shape()[2] <= (1 << 24), "preprocess: image ",
              image.shape().str(), " is too large");
  const int h = static_cast<int>(image.shape()[1]), w = static_cast<int>(image.shape()[2]);
  const PreprocessPlan plan = plan_preprocess(h, w, p);
  if (p.resize_shorter == 0 && p.crop == 0)
    TRICK_CHECK(plan.out_h == input_h && plan.out_w == input_w, "preprocess: the image is ", h, "x", w,
                " (height x width) but the model takes ", input_h, "x", input_w,
                " inputs and its transform does no resize or crop");
  else
    TRICK_CHECK(plan.out_h == input_h && plan.out_w == input_w, "preprocess: resize ", p.resize_shorter, " + crop ",
                p.crop, " turns the ", h, "x", w, " image into ", plan.out_h, "x", plan.out_w, ", but the model takes ",
                input_h, "x", input_w, " inputs");
  return resize_crop(image, plan.resized_h, plan.resized_w, plan.crop_top, plan.crop_left, plan.out_h, plan.out_w);
}

}  // namespace trick
