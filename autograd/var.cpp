#include "autograd/var.h"

#include <unordered_set>

#include "autograd/profile.h"
#include "kernels/pointwise.h"

namespace trick {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradScope::NoGradScope() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradScope::~NoGradScope() { g_grad_enabled = previous_; }

Var::Var(Tensor value, bool requires_grad) : state_(std::make_shared<VarState>()) {
  state_->value = std::move(value);
  state_->requires_grad = requires_grad;
}

void Var::set_requires_grad(bool on) {
  TRICK_CHECK(state_, "set_requires_grad on an undefined Var");
  TRICK_CHECK(is_leaf() || on, "set_requires_grad(false) on a non-leaf Var (use detach())");
  state_->requires_grad = on;
}

bool any_requires_grad(std::initializer_list<const Var*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Var* v : inputs)
    if (v && v->requires_grad()) return true;
  return false;
}

namespace {
Var record(Tensor value, const char* op, std::vector<VarPtr> inputs, BackwardFn backward) {
  Var out(std::move(value), true);
  auto node = std::make_shared<Node>();
  node->op = op;
  node->layer = profile_current_layer();
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  out.state()->node = std::move(node);
  return out;
}
}  // namespace

Var make_result(Tensor value, const char* op, std::initializer_list<const Var*> inputs, BackwardFn backward) {
  if (!any_requires_grad(inputs)) return Var(std::move(value));
  std::vector<VarPtr> states;
  for (const Var* v : inputs) states.push_back(v && v->defined() ? v->state() : nullptr);
  return record(std::move(value), op, std::move(states), std::move(backward));
}

Var make_result(Tensor value, const char* op, const std::vector<Var>& inputs, BackwardFn backward) {
  bool any = false;
  for (const Var& v : inputs) any = any || v.requires_grad();
  if (!g_grad_enabled || !any) return Var(std::move(value));
  std::vector<VarPtr> states;
  for (const Var& v : inputs) states.push_back(v.state());
  return record(std::move(value), op, std::move(states), std::move(backward));
}

Tensor grad_destination(VarState& input, bool* accumulate) {
  if (input.grad.defined()) {
    *accumulate = true;
    return input.grad;
  }
  *accumulate = false;
  input.grad = Tensor::empty(input.value.shape(), input.value.device());
  return input.grad;
}

void accumulate_grad(VarState& input, const Tensor& g, bool may_alias) {
  TRICK_CHECK(g.shape() == input.value.shape(), "backward: gradient of shape ", g.shape().str(),
              " for a value of shape ", input.value.shape().str());
  if (!input.grad.defined()) {
    if (may_alias) {
      input.grad = g;
    } else {
      input.grad = Tensor::empty(g.shape(), g.device());
      copy(g, input.grad);
    }
    return;
  }
  axpy(1.f, g, input.grad);
}

void Var::backward() {
  TRICK_CHECK(state_ && state_->value.numel() == 1, "backward: a Var of shape ",
              state_ ? state_->value.shape().str() : std::string("(undefined)"),
              " needs an explicit seed gradient");
  backward(Tensor::full(state_->value.shape(), 1.f, state_->value.device()));
}

void Var::backward(const Tensor& seed) {
  TRICK_CHECK(state_ && state_->requires_grad, "backward: the Var does not require a gradient");
  TRICK_CHECK(seed.shape() == state_->value.shape(), "backward: seed of shape ", seed.shape().str(),
              " for a Var of shape ", state_->value.shape().str());
  // Topological order by an iterative depth-first search (graphs can be deep). `order`
  // holds owning pointers: freeing a node's inputs below must not free a Var still to visit.
  std::vector<VarPtr> order;
  std::unordered_set<VarState*> seen;
  std::vector<std::pair<VarPtr, size_t>> stack{{state_, 0}};
  seen.insert(state_.get());
  while (!stack.empty()) {
    VarState* v = stack.back().first.get();
    size_t& next = stack.back().second;
    if (v->node && next < v->node->inputs.size()) {
      const VarPtr& u = v->node->inputs[next++];
      if (u && u->requires_grad && !seen.count(u.get())) {
        seen.insert(u.get());
        stack.push_back({u, 0});
      }
      continue;
    }
    order.push_back(std::move(stack.back().first));
    stack.pop_back();
  }
  accumulate_grad(*state_, seed, false);
  // Consumers come after producers in `order`; walk it backwards.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    VarState* v = it->get();
    if (!v->node) continue;
    TRICK_CHECK(v->node->backward, "backward: the graph through '", v->node->op,
                "' was already used by an earlier backward()");
    if (v->grad.defined()) {
      LayerProfiler* profiler = LayerProfiler::active();
      if (profiler) profiler->begin_backward(v->node->layer);
      v->node->backward(v->grad, v->node->inputs);
      if (profiler) profiler->end_backward();
    }
    // Free the tape as we go: saved tensors live in the closure, the graph in the inputs.
    v->node->backward = nullptr;
    v->node->inputs.clear();
    if (!v->retain_grad) v->grad = Tensor();
    it->reset();  // its consumers are done: let its value go if nobody else holds it
  }
}

}  // namespace trick
