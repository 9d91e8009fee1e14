// The small model the attack tests run on (tests/test_attack.cpp, and the CUDA graph tests
// in tests/test_cuda.cpp), and random images on the 8-bit grid.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "kernels/pointwise.h"
#include "layers/module.h"
#include "models/model.h"
#include "tensor/random.h"

namespace trick_test {
using namespace trick;

// conv 3x3 (3->8) ReLU, conv 3x3 stride 2 (8->8) ReLU, flatten, linear (512->4): input
// 16x16x3, with its own resize+crop transform from larger images. Random weights, sharp
// enough that a perturbation of a few 8-bit levels can move the prediction.
class TinyNet : public Model {
 public:
  explicit TinyNet(uint64_t seed) {
    register_module("c1", &c1);
    register_module("c2", &c2);
    register_module("fc", &fc);
    Rng rng(seed);
    c1.reset_parameters(rng);
    c2.reset_parameters(rng);
    fc.reset_parameters(rng);
    Tensor& w = fc.weight.mutable_value();
    unary(UnaryOp::Affine, w, w, 8.f, 0.f);
    set_requires_grad(false);
  }
  Var forward(const Var& x) override {
    Var h = c2.forward(c1.forward(x));
    return fc.forward(reshape(h, Shape{h.shape()[0], 8 * 8 * 8}));
  }
  std::string name() const override { return "tiny"; }
  int input_height() const override { return 16; }
  int input_width() const override { return 16; }
  int input_channels() const override { return 3; }
  Preprocess preprocess() const override { return {18, 16}; }
  const std::vector<std::string>& class_names() const override { return names_; }

 private:
  Conv2d c1{Conv2dOptions{3, 8, 3, 3, 1, 1, 1, true, true}};
  Conv2d c2{Conv2dOptions{8, 8, 3, 3, 2, 1, 1, true, true}};
  Linear fc{512, 4};
  std::vector<std::string> names_{"zero", "one", "two", "three"};
};

// An image on the 8-bit grid.
inline Tensor grid_image(int h, int w, Rng& rng) {
  Tensor t = rand_uniform(Shape{h, w, 3}, rng);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std::round(t.data()[i] * 255.f) / 255.f;
  return t;
}

}  // namespace trick_test
