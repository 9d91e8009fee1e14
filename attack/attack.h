// The attack: change the pixels of images, not the weights, until the model says the target.
//
// One loop, several update rules. Every image is perturbed at its own resolution: the
// model's evaluation transform (resize + crop) is part of the differentiated graph, so the
// image saved at the end, classified with the standard transform, is exactly what was
// attacked. After every step the image is projected onto the eps-ball around the original
// and onto [0, 1]. Success is decided on the image as it will be saved (rounded to 8 bits,
// and kept inside the ball on the 8-bit grid); if rounding loses a success, a short
// refinement by single 8-bit steps follows. Images in a batch stop independently.
//
// attack/ knows nothing of files or drawing: tools/cmd_attack.cpp reads and writes.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"

namespace trick {

enum class AttackMethod { Descent, Fgsm, Bim, Pgd, MiFgsm, Adam, Cw };
enum class Ball { Linf, L2 };

AttackMethod parse_attack_method(const std::string& name);  // "descent", "fgsm", ... (error lists them)
const char* attack_method_name(AttackMethod m);
Ball parse_ball(const std::string& name);                   // "linf" or "l2"
const char* ball_name(Ball b);

// Units: eps and step are in [0, 1] pixel units here; the command converts from 8-bit units.
struct AttackSettings {
  AttackMethod method = AttackMethod::Pgd;
  bool targeted = true;
  Ball ball = Ball::Linf;  // the eps-ball (L2 only for pgd; cw minimises L2 itself)
  float eps = 8.f / 255.f;
  // fgsm/bim/pgd/mifgsm: the change per step (L-inf) or the step's L2 length (pgd l2);
  // descent: the largest pixel change of the first step (the learning rate is then fixed);
  // adam: the learning rate (roughly the per-step change of each pixel).
  float step = 1.f / 255.f;
  int steps = 300;
  float confidence = 0.99f;  // stop when the target's probability reaches this (untargeted: top-1 changes)
  bool random_start = false;
  int restarts = 1;          // keep the best of this many runs (with random starts)
  float momentum = 1.f;      // mifgsm decay
  float beta1 = 0.9f, beta2 = 0.999f;  // adam
  float kappa = 0.f;         // cw: required logit margin
  float cw_c = 1.f;          // cw: initial constant
  int cw_search = 5;         // cw: binary-search rounds over the constant (steps each)
  float cw_lr = 0.01f;       // cw: Adam learning rate on the tanh variable
  int refine_steps = 50;     // 8-bit refinement after a success lost to rounding
  bool raw_input = false;    // the images already have the model's input size: no resize/crop
  // On a GPU, replay each step after the first from one CUDA graph (attack/graph_step.h);
  // false runs every step eagerly (for debugging). No effect on the CPU.
  bool cuda_graph = true;
  uint64_t seed = 0;
};

// Throws naming the option when a setting is out of range.
void validate(const AttackSettings& s);

struct AttackItem {
  Tensor image;  // (H, W, C) original pixels in [0, 1], on the 8-bit grid (decoded from a file)
  int label;     // targeted: the class to reach; untargeted: the true class to move away from
};

struct ClassProb {
  int index;
  float prob;
};

struct StepRecord {
  int step = 0;               // 0 = before any update
  int round = 0;              // cw: binary-search round; others: restart
  bool refine = false;        // a step of the 8-bit refinement
  double loss = 0;            // the objective the method minimises
  double cross_entropy = 0;   // toward the label (for every method, to compare them)
  float label_prob = 0;       // probability of the target (targeted) or true class (untargeted)
  ClassProb top1{0, 0.f};
  std::vector<ClassProb> top5;
  float linf = 0, l2 = 0;     // of the perturbation x - x0, in 8-bit units
  int64_t l0 = 0;             // pixel values changed by at least half an 8-bit level
  float grad_norm = 0;        // L2 norm of the gradient with respect to the image
  float cw_c = 0;             // cw: the constant c of this step's round (0 for other methods)
  double seconds = 0;         // since the attack started
  bool from_graph = false;    // this step's forward and gradient were a CUDA graph's replay
};

struct ItemResult {
  Tensor adversarial;         // (H, W, C) on the 8-bit grid: what is saved and was checked
  Tensor adversarial_float;   // the float image before rounding
  bool success_float = false; // success on the float image
  bool success_8bit = false;  // success on the 8-bit image (the one that counts)
  bool refined = false;       // the 8-bit refinement ran
  int steps = 0;              // update steps taken (the best run's)
  int best_run = 0;           // restart (or cw round) the result comes from
  std::vector<float> original_probs, final_probs;  // softmax of the original and of `adversarial`
  std::vector<StepRecord> trace;  // every step of every run, in order
  std::string graph_failure;      // why a CUDA graph capture failed (those steps ran eagerly), or empty
  float linf = 0, l2 = 0;     // final perturbation norms, 8-bit units
  int64_t l0 = 0;
};

// What the observer sees after each step of each item (for progress lines and frames).
struct StepView {
  int item = 0;
  const StepRecord* record = nullptr;
  const Tensor* image = nullptr;  // the current image (H, W, C), on the model's device
  const std::vector<float>* probs = nullptr;
};
using StepObserver = std::function<void(const StepView&)>;

// Attacks all items in one batch on the model's device. The model's parameters must be
// frozen (they are never touched). Items may have different sizes.
std::vector<ItemResult> run_attack(Model& model, const std::vector<AttackItem>& items, const AttackSettings& settings,
                                   const StepObserver& observer = {});

// Softmax probabilities of the model on images (H, W, C), through the model's transform.
std::vector<std::vector<float>> predict(Model& model, const std::vector<Tensor>& images, bool raw_input);

}  // namespace trick
