// A small Inception-style classifier for Fashion-MNIST, trained by trick itself
// (`trick train`) and shipped inside the library as the default model.
//
// Input: pixels in [0, 1], (N, 28, 28, 1) NHWC. The first op is the dataset normalisation
// (x - mean) / std, so gradients and epsilons are in pixel units. Then:
//
//   stem      ConvBnRelu 3x3, 1 -> 32                          28x28
//             max pool 3x3 stride 2 (pad 1)                    14x14
//   block1    Inception block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1
//   reduce    grid reduction: 3x3 s2 | 1x1 -> 3x3 -> 3x3 s2 | max pool s2   7x7
//   block2    Inception block (as block1, wider)
//   global average pool, fc -> 10 classes
//
// Each branch writes into its channel slice of the block output (concat_into). While
// training, every ConvBnRelu runs its batch norm in training mode; for inference
// fold_batch_norms() folds each into its conv (load_model does this after loading).
// Parameter names are hierarchical: "block1.branch3x3_2.conv.weight", "fc.bias", ...
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "tensor/random.h"

namespace trick {

class FashionInception : public Model {
 public:
  // Fashion-MNIST's training-set pixel statistics (over all 60,000 x 784 pixels).
  static constexpr float kMean = 0.2860f;
  static constexpr float kStd = 0.3530f;

  FashionInception();
  ~FashionInception() override;

  // He-normal convs, PyTorch's uniform init for fc, batch norms at identity (unfolded).
  void reset_parameters(Rng& rng);
  // Folds every batch norm into its conv; afterwards the model is for inference only.
  void fold_batch_norms();
  bool folded() const;

  Var forward(const Var& pixels) override;
  std::string name() const override { return "fashion_inception"; }
  int input_height() const override { return 28; }
  int input_width() const override { return 28; }
  int input_channels() const override { return 1; }
  Preprocess preprocess() const override { return {28, 28}; }
  const std::vector<std::string>& class_names() const override;

  struct Parts;

 private:
  std::unique_ptr<Parts> p_;
};

}  // namespace trick
