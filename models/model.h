// What a classifier offers the commands and the attack: its input (pixels in [0, 1],
// NHWC), how an image file becomes that input, its class names, and a forward pass.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/var.h"
#include "layers/module.h"

namespace trick {

// The evaluation transform an image goes through before the model (torchvision's for
// Inception v3: shorter side resized to 342 with antialiased bilinear, centre crop 299).
// resize_shorter == 0 means no resize; crop == 0 means no crop (the input must then have
// the model's size already).
struct Preprocess {
  int resize_shorter = 0;
  int crop = 0;
};

class Model : public Module {
 public:
  // pixels: (N, H, W, C) in [0, 1] at input_size(); returns logits (N, classes()).
  virtual Var forward(const Var& pixels) = 0;
  virtual std::string name() const = 0;
  virtual int input_height() const = 0;
  virtual int input_width() const = 0;
  virtual int input_channels() const = 0;
  virtual Preprocess preprocess() const = 0;
  virtual const std::vector<std::string>& class_names() const = 0;  // one line per class
  int classes() const { return static_cast<int>(class_names().size()); }
  // Where the parameters live.
  Device device() {
    auto params = named_parameters();
    return params.empty() ? Device::cpu() : params.front().second->value().device();
  }
};

}  // namespace trick
