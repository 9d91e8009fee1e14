// Modules: parameters, buffers and children with hierarchical names, so that a weight
// file's "Mixed_5b.branch1x1.conv.weight" maps onto the module tree.
//
// Children, parameters and buffers are registered by pointer to members, so a Module is
// neither copyable nor movable; build it in place (or behind a unique_ptr).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/var.h"
#include "layers/ops.h"

namespace trick {

using StateDict = std::map<std::string, Tensor>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  void train(bool on = true);  // recursive
  bool is_training() const { return training_; }

  std::vector<std::pair<std::string, Var*>> named_parameters(const std::string& prefix = "");
  std::vector<std::pair<std::string, Tensor*>> named_buffers(const std::string& prefix = "");
  std::vector<Var*> parameters();
  void set_requires_grad(bool on);  // freeze (false) or unfreeze every parameter
  void zero_grad();
  void to(Device device);  // moves parameters and buffers
  int64_t parameter_count();

  // Parameters and buffers by name (shallow: tensors share storage with the module).
  StateDict state_dict();
  // Copies values in by name. Every name must be present with the right shape, and no
  // name may be left over; the error lists the missing, unexpected and mis-shaped names.
  void load_state_dict(const StateDict& state);

 protected:
  void register_module(const std::string& name, Module* m) { modules_.emplace_back(name, m); }
  void register_parameter(const std::string& name, Var* p) { params_.emplace_back(name, p); }
  void register_buffer(const std::string& name, Tensor* t) { buffers_.emplace_back(name, t); }

 private:
  std::vector<std::pair<std::string, Module*>> modules_;
  std::vector<std::pair<std::string, Var*>> params_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  bool training_ = false;
};

class BatchNorm2d;

// Sees every named layer output while in scope (on this thread): ConvBnRelu reports its
// output under its layer name ("Mixed_5b.branch1x1"). For inspecting activations, e.g.
// `trick grad --dump-activations`.
using ActivationObserver = std::function<void(const std::string& name, const Tensor& value)>;
class ActivationObserverScope {
 public:
  explicit ActivationObserverScope(ActivationObserver observer);
  ~ActivationObserverScope();
  ActivationObserverScope(const ActivationObserverScope&) = delete;
  ActivationObserverScope& operator=(const ActivationObserverScope&) = delete;

 private:
  ActivationObserver previous_;
};
void observe_activation(const std::string& name, const Tensor& value);

struct Conv2dOptions {
  int64_t in = 0, out = 0;
  int kernel_h = 1, kernel_w = 1;
  int stride = 1;
  int pad_h = 0, pad_w = 0;
  bool bias = false;
  bool relu = false;  // ReLU epilogue
};

// weight: (O, KH, KW, I); bias: (O) when present.
class Conv2d : public Module {
 public:
  explicit Conv2d(const Conv2dOptions& o, const std::string& name = "");
  Var forward(const Var& x, Tensor out = Tensor());
  // Kaiming-normal weights (fan in, ReLU gain), zero bias.
  void reset_parameters(Rng& rng);
  // Folds an evaluation-mode batch norm into weight and bias: after this, the conv alone
  // computes bn(conv(x)), followed by the ReLU epilogue if enabled.
  void fold_batch_norm(const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var, float eps);
  const Conv2dParams& params() const { return params_; }
  void set_relu(bool on) { params_.relu = on; }
  Var weight, bias;

 private:
  Conv2dParams params_;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f);
  // Training: batch statistics (updates the running ones). Evaluation: running statistics.
  Var forward(const Var& x, bool relu = false);
  // The evaluation-mode per-channel affine: y = x * scale + shift.
  void eval_affine(Tensor& scale, Tensor& shift) const;
  Var weight, bias;          // gamma, beta: (C)
  Tensor running_mean, running_var;  // (C)
  float eps, momentum;
};

// conv (no bias) -> batch norm -> ReLU, named "conv" and "bn" as torchvision's BasicConv2d.
// fold() turns it into a single conv with bias and ReLU epilogue for inference and attacks.
class ConvBnRelu : public Module {
 public:
  ConvBnRelu(const Conv2dOptions& o, float bn_eps, const std::string& name = "");
  Var forward(const Var& x, Tensor out = Tensor());
  void fold();
  bool folded() const { return folded_; }
  Conv2d conv;
  BatchNorm2d bn;

 private:
  bool folded_ = false;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const Pool2dParams& p) : p_(p) {}
  Var forward(const Var& x, Tensor out = Tensor()) { return max_pool2d(x, p_, out); }

 private:
  Pool2dParams p_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(const Pool2dParams& p) : p_(p) {}
  Var forward(const Var& x, Tensor out = Tensor()) { return avg_pool2d(x, p_, out); }

 private:
  Pool2dParams p_;
};

class GlobalAvgPool : public Module {
 public:
  Var forward(const Var& x) { return global_avg_pool(x); }
};

// weight: (O, I); bias: (O)
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Var forward(const Var& x) { return linear(x, weight, bias); }
  void reset_parameters(Rng& rng);  // U(-1/sqrt(in), 1/sqrt(in)), as PyTorch
  Var weight, bias;
};

class Dropout : public Module {
 public:
  Dropout(float p, uint64_t seed) : p_(p), rng_(seed) {}
  Var forward(const Var& x) { return dropout(x, p_, rng_, is_training()); }

 private:
  float p_;
  Rng rng_;
};

}  // namespace trick
