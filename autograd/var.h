// Reverse-mode automatic differentiation.
//
// A Var holds a tensor, its gradient, and the Node that produced it. An op computes its
// output and, when gradients are on and some input requires one, records a Node whose
// backward closure keeps only what the backward needs. backward() visits the nodes in
// reverse topological order, runs each closure once, and frees it right after (the
// tape is freed as it goes). Parameters that do not require gradients never get one:
// ops test each input's requires_grad() and skip that gradient's work entirely.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace trick {

struct Node;

struct VarState {
  Tensor value;
  Tensor grad;  // undefined until a gradient arrives
  bool requires_grad = false;
  bool retain_grad = false;  // keep the gradient of a non-leaf after backward
  std::shared_ptr<Node> node;  // producer; null for leaves
};

using VarPtr = std::shared_ptr<VarState>;

// grad_out: the gradient of the op's output; inputs: the op's inputs, in the order given.
using BackwardFn = std::function<void(const Tensor& grad_out, const std::vector<VarPtr>& inputs)>;

struct Node {
  const char* op = "";
  int layer = -1;  // the LayerProfiler layer it was recorded in (autograd/profile.h), or -1
  std::vector<VarPtr> inputs;
  BackwardFn backward;
};

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false);

  bool defined() const { return state_ && state_->value.defined(); }
  const Tensor& value() const { return state_->value; }
  Tensor& mutable_value() { return state_->value; }  // in-place updates of leaves (optimisers, attacks)
  const Tensor& grad() const { return state_->grad; }
  const Shape& shape() const { return state_->value.shape(); }
  bool requires_grad() const { return state_ && state_->requires_grad; }
  void set_requires_grad(bool on);
  void retain_grad() { state_->retain_grad = true; }
  bool is_leaf() const { return !state_->node; }
  void zero_grad() { state_->grad = Tensor(); }
  Var detach() const { return Var(state_->value, false); }

  // Backpropagates from this Var: a one-element Var is seeded with 1, others need a seed
  // of their own shape. Leaf gradients accumulate over calls until zero_grad().
  void backward();
  void backward(const Tensor& seed);

  const VarPtr& state() const { return state_; }

 private:
  VarPtr state_;
};

// Gradient mode: a thread-local switch; NoGradScope turns recording off for its lifetime.
bool grad_enabled();
class NoGradScope {
 public:
  NoGradScope();
  ~NoGradScope();
  NoGradScope(const NoGradScope&) = delete;
  NoGradScope& operator=(const NoGradScope&) = delete;

 private:
  bool previous_;
};

// --- for writing ops ---

// True when gradients are on and one of the inputs requires a gradient.
bool any_requires_grad(std::initializer_list<const Var*> inputs);
// The output of an op; records a node with `backward` when any_requires_grad(inputs).
Var make_result(Tensor value, const char* op, std::initializer_list<const Var*> inputs, BackwardFn backward);
Var make_result(Tensor value, const char* op, const std::vector<Var>& inputs, BackwardFn backward);

// In a backward closure: where to write input's gradient. Allocates it (uninitialised;
// *accumulate = false: write, don't add) if none has arrived yet; otherwise returns the
// existing one with *accumulate = true.
Tensor grad_destination(VarState& input, bool* accumulate);
// In a backward closure: adds g to input's gradient. With may_alias the input may keep g
// itself as its gradient (g must then be owned by nobody else who will write to it).
void accumulate_grad(VarState& input, const Tensor& g, bool may_alias);

}  // namespace trick
