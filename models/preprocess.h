// A model's evaluation transform (models/model.h `Preprocess`) applied to an image as ops
// in the graph, so the attack's gradient reaches the pixels of the picture the user gave.
#pragma once
#include "autograd/var.h"
#include "models/model.h"

namespace trick {

// Where the transform takes an h x w image: the size after Resize(resize_shorter) and the
// CenterCrop(crop) window inside it, computed as torchvision 0.14 does.
struct PreprocessPlan {
  int resized_h = 0, resized_w = 0;             // after Resize (the image's size if none)
  int crop_top = 0, crop_left = 0;              // CenterCrop window in the resized image
  int out_h = 0, out_w = 0;                     // the model input
};

// Throws if the transform cannot be applied (e.g. the crop is larger than the image).
PreprocessPlan plan_preprocess(int h, int w, const Preprocess& p);

// image: (N, H, W, C) pixels in [0, 1] -> (N, input_h, input_w, C): torchvision's
// Resize(p.resize_shorter) (antialiased bilinear, as PIL on a float image: no 8-bit
// rounding) then CenterCrop(p.crop); either step is skipped when its size is 0.
// Differentiable.
// Throws naming both sizes when the result would not be input_h x input_w.
Var apply_preprocess(const Var& image, const Preprocess& p, int input_h, int input_w);

}  // namespace trick
