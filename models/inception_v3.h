// torchvision's Inception v3 (Google's weights), evaluation mode, auxiliary head ignored.
//
// Input: pixels in [0, 1], (N, 299, 299, 3) NHWC. The first op is 2x - 1, what
// torchvision's transform_input=True does to ImageNet-normalised input, so gradients and
// epsilons are in pixel units. Every BasicConv2d (conv, BN eps 0.001, ReLU) has its batch
// norm folded into the conv at load time; each branch writes into its channel slice of
// the block output, so the concatenations cost nothing.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"

namespace trick {

class InceptionV3 : public Model {
 public:
  explicit InceptionV3(int num_classes = 1000);
  ~InceptionV3() override;

  // Loads a torchvision/timm state dict (PyTorch layouts: OIHW conv weights), permutes to
  // our layouts and folds the batch norms. AuxLogits.* and num_batches_tracked entries are
  // ignored; anything else missing, extra or mis-shaped is an error naming it.
  void load_torchvision(const StateDict& state);
  // Folds every batch norm into its conv (done by load_torchvision).
  void fold_batch_norms();

  Var forward(const Var& pixels) override;
  std::string name() const override { return "inception_v3"; }
  int input_height() const override { return 299; }
  int input_width() const override { return 299; }
  int input_channels() const override { return 3; }
  Preprocess preprocess() const override { return {342, 299}; }
  const std::vector<std::string>& class_names() const override;

  struct Blocks;

 private:
  std::unique_ptr<Blocks> b_;
};

// Converts a PyTorch-layout state dict entry to ours: 4-D conv weights OIHW -> OHWI.
Tensor to_our_layout(const std::string& name, const Tensor& t);

}  // namespace trick
