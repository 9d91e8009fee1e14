// Optimisers for training parameters (SGD with momentum, Adam, AdamW) and a learning-rate
// schedule. They live with the modules (layers/) because they update Module parameters
// from the gradients autograd leaves on them; attacks, which update an image, have their
// own rules in attack/.
//
// The updates follow PyTorch's torch.optim exactly (same formulas, same order):
//   SGD:   d = g + wd * p;  buf = d on the first step, else momentum * buf + d;
//          d = nesterov ? d + momentum * buf : buf;  p -= lr * d
//   Adam:  d = g + wd * p (L2 penalty in the gradient);  t += 1
//          m = b1 * m + (1 - b1) * d;  v = b2 * v + (1 - b2) * d^2
//          p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//   AdamW: as Adam with d = g, after p *= 1 - lr * wd (decoupled weight decay)
// Each parameter has its own weight decay (0 for biases and batch-norm parameters, say).
// Parameters without a gradient are skipped. Host (CPU) parameters only.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/var.h"

namespace trick {

struct OptimParam {
  std::string name;  // for the state's names and error messages
  Var* var = nullptr;
  float weight_decay = 0.f;
};

struct OptimizerOptions {
  float lr = 0.1f;
  float momentum = 0.9f;  // SGD
  bool nesterov = false;  // SGD
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;  // Adam, AdamW
};

class Optimizer {
 public:
  Optimizer(std::vector<OptimParam> params, const OptimizerOptions& o);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter from its current gradient.
  void step();
  virtual std::string name() const = 0;  // "sgd", "adam", "adamw"

  void set_lr(float lr) { o_.lr = lr; }
  float lr() const { return o_.lr; }
  const OptimizerOptions& options() const { return o_; }
  int64_t steps() const { return steps_; }

  // The per-parameter state for a checkpoint: "<param name>.<slot>" -> tensor (slots:
  // momentum_buffer; exp_avg, exp_avg_sq), only for slots that exist yet. load_state takes
  // such a map (extra names are an error, as are mis-shaped ones) and the step count.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::map<std::string, Tensor>& state, int64_t steps);

 protected:
  // Updates p (n values) in place from g; slots are this parameter's state tensors
  // (allocated, zero-filled, on its first update).
  virtual void update(const OptimParam& param, float* p, const float* g, int64_t n, std::vector<Tensor>& slots,
                      bool first) = 0;
  virtual std::vector<std::string> slot_names() const = 0;

  OptimizerOptions o_;
  int64_t steps_ = 0;  // completed steps; Adam's t is steps_ + 1 during a step

 private:
  std::vector<OptimParam> params_;
  std::vector<std::vector<Tensor>> slots_;  // per parameter; empty until its first update
};

class Sgd : public Optimizer {
 public:
  using Optimizer::Optimizer;
  std::string name() const override { return "sgd"; }

 protected:
  void update(const OptimParam& param, float* p, const float* g, int64_t n, std::vector<Tensor>& slots,
              bool first) override;
  std::vector<std::string> slot_names() const override;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<OptimParam> params, const OptimizerOptions& o, bool decoupled_weight_decay = false)
      : Optimizer(std::move(params), o), decoupled_(decoupled_weight_decay) {}
  std::string name() const override { return decoupled_ ? "adamw" : "adam"; }

 protected:
  void update(const OptimParam& param, float* p, const float* g, int64_t n, std::vector<Tensor>& slots,
              bool first) override;
  std::vector<std::string> slot_names() const override;

 private:
  bool decoupled_;
};

// "sgd", "adam" or "adamw"; throws naming the choices otherwise.
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<OptimParam> params,
                                          const OptimizerOptions& o);

// Learning-rate schedules over a run of `total` steps, with an optional linear warm-up over
// the first `warmup` steps (from lr / warmup up to lr):
//   constant: lr;  step: lr x 0.1 from 50% of the steps, x 0.01 from 75%;
//   cosine: lr * (1 + cos(pi * progress)) / 2, progress going 0 -> 1 over the steps after
//   the warm-up (so the last step's rate is just above 0).
enum class LrSchedule { Constant, Step, Cosine };
LrSchedule parse_lr_schedule(const std::string& s);
const char* lr_schedule_name(LrSchedule s);
// The rate for step `step` (0-based) of `total`.
float scheduled_lr(LrSchedule s, float lr, int64_t step, int64_t total, int64_t warmup = 0);

}  // namespace trick
