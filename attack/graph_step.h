// The attack step as one CUDA graph (DESIGN.md: "The attack step is static").
//
// After the eager first step (which also warms every workspace and fixes descent's rate),
// attack/attack.cpp hands the active items to GraphStep::run each step. One step, for all
// active items, in the eager loop's order and with its kernels:
//   forward of the images through the model's transform, cross-entropy toward the labels
//   (negated when untargeted), softmax probabilities, backward to the images, each
//   gradient's squared L2 norm, a copy of each image as evaluated, the perturbation norms
//   of that image, the update (sign step for bim/fgsm/pgd-linf, the fixed-rate step for
//   descent) and the L-inf projection.
// It is captured once and replayed while the active set stays the same. When images
// finish, the graph is captured again for the smaller set (rather than masking finished
// items in a static batch): a finished image then costs nothing, and a capture costs
// about one eager step of host time, which the remaining replays repay. A set is only
// captured after a step of exactly that set ran eagerly (note_eager; else run declines
// once, and the caller's eager step is that step): its shapes then ran outside a capture,
// so cuDNN measured its algorithms for them (it never measures inside a capture) and the
// workspaces grew outside it (growing inside fails the capture).
//
// The host reads one packed buffer per step (probabilities, losses, norms) after the
// replay; nothing inside the captured region reads the device on the host, and after the
// first capture no step allocates. Methods whose update needs a per-step value on the
// host (pgd with the L2 ball: the gradient norm; mifgsm: its L1 norm; adam: the step
// count; cw: its own loop) stay eager: see graph_step_supported.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attack/attack.h"

namespace trick {

// Whether a graph can run the steps of an attack with these settings on `device`;
// otherwise `why` (when given) says why not.
bool graph_step_supported(const AttackSettings& s, Device device, std::string* why);

// One active item of a step.
struct GraphStepItem {
  Tensor* x = nullptr;         // (H, W, C) current image, on the device: read, then updated in place
  const Tensor* x0 = nullptr;  // (H, W, C) the original image
  int label = 0;               // targeted: the target; untargeted: the true class
  float lr = 0.f;              // descent: the fixed rate the first step chose
};

// What a step's host read gives, per item (in the order of the items).
struct GraphStepResult {
  std::vector<std::vector<float>> probs;  // softmax of the logits
  std::vector<double> loss, ce;           // the objective and the cross-entropy
  std::vector<float> grad_norm;           // L2 norm of the gradient with respect to the image
  std::vector<float> linf, l2;            // of (evaluated image - x0), in 8-bit units
  std::vector<int64_t> l0;                // values changed by at least half an 8-bit level
  std::vector<Tensor> evaluated;          // the image each item was evaluated at (x before the update)
};

// The packed readout: one row per item, the k probabilities then kReadoutExtra columns:
// objective, cross-entropy, sum of squared gradient, max |d|, sum of d^2, count of |d| < 0.5
// (d = (x - x0) * 255). unpack_readout turns rows into a GraphStepResult (all but
// `evaluated`); numels[i] is item i's pixel-value count.
constexpr int64_t kReadoutExtra = 6;
void unpack_readout(const std::vector<float>& packed, int64_t k, const std::vector<int64_t>& numels,
                    GraphStepResult& out);

class GraphStep {
 public:
  GraphStep(Model& model, const AttackSettings& settings);
  ~GraphStep();
  GraphStep(const GraphStep&) = delete;
  GraphStep& operator=(const GraphStep&) = delete;

  // False when the settings or device are not supported, or after two failed captures.
  bool enabled() const;
  // One step for `items` (see above): captured when the items differ from the last
  // capture (their image buffers, sizes, labels or rates), then replayed. Returns false,
  // having changed nothing on the device, when this set has not run eagerly yet (see
  // note_eager) or the capture failed; the caller then runs this step eagerly (and a
  // second failed capture disables the graph: fallback_reason()).
  bool run(const std::vector<GraphStepItem>& items, GraphStepResult& out);
  // The caller ran a step of exactly `items` eagerly (after their update: descent's rate
  // is then fixed): a following run() of the same items may capture at once.
  void note_eager(const std::vector<GraphStepItem>& items);
  const std::string& fallback_reason() const;
  int capture_failures() const;  // failed captures so far (each step it was for ran eagerly)
  int captures() const;  // successful captures so far
  size_t nodes() const;  // operations in the current graph

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trick
