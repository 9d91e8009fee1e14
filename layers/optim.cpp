#include "layers/optim.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "kernels/conv.h"

namespace trick {

Optimizer::Optimizer(std::vector<OptimParam> params, const OptimizerOptions& o)
    : o_(o), params_(std::move(params)), slots_(params_.size()) {
  std::set<std::string> names;
  for (const OptimParam& p : params_) {
    TRICK_CHECK(p.var && p.var->defined(), "optimizer: parameter '", p.name, "' is undefined");
    TRICK_CHECK(names.insert(p.name).second, "optimizer: parameter '", p.name, "' is listed twice");
    TRICK_CHECK(p.weight_decay >= 0.f && std::isfinite(p.weight_decay), "optimizer: weight decay ", p.weight_decay,
                " of '", p.name, "' must be a finite number >= 0");
  }
  TRICK_CHECK(std::isfinite(o.lr) && o.lr >= 0.f, "optimizer: learning rate ", o.lr, " must be a finite number >= 0");
  TRICK_CHECK(o.momentum >= 0.f && o.momentum < 1.f, "optimizer: momentum ", o.momentum, " outside [0, 1)");
  TRICK_CHECK(o.beta1 >= 0.f && o.beta1 < 1.f && o.beta2 >= 0.f && o.beta2 < 1.f, "optimizer: betas (", o.beta1,
              ", ", o.beta2, ") outside [0, 1)");
  TRICK_CHECK(o.eps > 0.f, "optimizer: eps ", o.eps, " must be > 0");
}

void Optimizer::step() {
  TRICK_CHECK(!FrozenConvWeights::open(),
              "optimizer step while convolution weights are declared frozen (a FrozenConvWeights scope is open)");
  for (size_t i = 0; i < params_.size(); ++i) {
    const OptimParam& prm = params_[i];
    Var& v = *prm.var;
    if (!v.state() || !v.grad().defined()) continue;
    Tensor& value = v.mutable_value();
    TRICK_CHECK(value.device().is_cpu(), "optimizer: parameter '", prm.name, "' is on ", value.device().str(),
                "; the optimisers update host (CPU) parameters only");
    TRICK_CHECK(value.is_contiguous(), "optimizer: parameter '", prm.name, "' is not contiguous");
    TRICK_CHECK(v.grad().shape() == value.shape(), "optimizer: gradient of '", prm.name, "' has shape ",
                v.grad().shape().str(), ", the parameter ", value.shape().str());
    const Tensor g = v.grad().to(Device::cpu()).contiguous();
    const bool first = slots_[i].empty();
    if (first)
      for (size_t k = 0; k < slot_names().size(); ++k) slots_[i].push_back(Tensor::zeros(value.shape()));
    update(prm, value.data(), g.data(), value.numel(), slots_[i], first);
  }
  ++steps_;
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  const std::vector<std::string> slots = slot_names();
  for (size_t i = 0; i < params_.size(); ++i)
    for (size_t k = 0; k < slots_[i].size(); ++k) out.emplace_back(params_[i].name + "." + slots[k], slots_[i][k]);
  return out;
}

void Optimizer::load_state(const std::map<std::string, Tensor>& state, int64_t steps) {
  TRICK_CHECK(steps >= 0, "optimizer state: negative step count ", steps);
  const std::vector<std::string> slots = slot_names();
  std::vector<std::vector<Tensor>> loaded(params_.size());
  size_t used = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    int found = 0;
    for (const std::string& s : slots) {
      auto it = state.find(params_[i].name + "." + s);
      if (it == state.end()) continue;
      ++found;
      TRICK_CHECK(it->second.shape() == params_[i].var->shape(), "optimizer state '", it->first, "' has shape ",
                  it->second.shape().str(), ", the parameter ", params_[i].var->shape().str());
      loaded[i].push_back(it->second.to(Device::cpu()).clone());
    }
    TRICK_CHECK(found == 0 || found == static_cast<int>(slots.size()), "optimizer state for '", params_[i].name,
                "' is incomplete (", found, " of ", slots.size(), " tensors)");
    used += found;
  }
  if (used != state.size())
    for (const auto& [name, t] : state) {
      bool known = false;
      for (size_t i = 0; i < params_.size() && !known; ++i)
        for (const std::string& s : slots) known = known || name == params_[i].name + "." + s;
      TRICK_CHECK(known, "optimizer state '", name, "' belongs to no parameter of this ", this->name(),
                  " optimizer");
    }
  slots_ = std::move(loaded);
  steps_ = steps;
}

void Sgd::update(const OptimParam& param, float* p, const float* g, int64_t n, std::vector<Tensor>& slots,
                 bool first) {
  const float lr = o_.lr, wd = param.weight_decay, mu = o_.momentum;
  float* buf = slots[0].data();
  for (int64_t i = 0; i < n; ++i) {
    float d = g[i];
    if (wd != 0.f) d += wd * p[i];
    if (mu != 0.f) {
      buf[i] = first ? d : mu * buf[i] + d;
      d = o_.nesterov ? d + mu * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

std::vector<std::string> Sgd::slot_names() const { return {"momentum_buffer"}; }

void Adam::update(const OptimParam& param, float* p, const float* g, int64_t n, std::vector<Tensor>& slots,
                  bool /*first*/) {
  const int64_t t = steps_ + 1;
  const float lr = o_.lr, wd = param.weight_decay, b1 = o_.beta1, b2 = o_.beta2, eps = o_.eps;
  // Bias corrections in double, as PyTorch computes them in Python floats.
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  float* m = slots[0].data();
  float* v = slots[1].data();
  for (int64_t i = 0; i < n; ++i) {
    float d = g[i];
    if (decoupled_)
      p[i] *= 1.f - lr * wd;
    else if (wd != 0.f)
      d += wd * p[i];
    m[i] = b1 * m[i] + (1.f - b1) * d;
    v[i] = b2 * v[i] + (1.f - b2) * d * d;
    p[i] -= step_size * (m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps));
  }
}

std::vector<std::string> Adam::slot_names() const { return {"exp_avg", "exp_avg_sq"}; }

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<OptimParam> params,
                                          const OptimizerOptions& o) {
  if (kind == "sgd") return std::make_unique<Sgd>(std::move(params), o);
  if (kind == "adam") return std::make_unique<Adam>(std::move(params), o, false);
  if (kind == "adamw") return std::make_unique<Adam>(std::move(params), o, true);
  fail("unknown optimizer '", kind, "' (known: sgd, adam, adamw)");
}

LrSchedule parse_lr_schedule(const std::string& s) {
  if (s == "constant") return LrSchedule::Constant;
  if (s == "step") return LrSchedule::Step;
  if (s == "cosine") return LrSchedule::Cosine;
  fail("unknown learning-rate schedule '", s, "' (known: constant, step, cosine)");
}

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::Constant: return "constant";
    case LrSchedule::Step: return "step";
    case LrSchedule::Cosine: return "cosine";
  }
  return "?";
}

float scheduled_lr(LrSchedule s, float lr, int64_t step, int64_t total, int64_t warmup) {
  TRICK_CHECK(total > 0 && step >= 0 && warmup >= 0, "scheduled_lr: step ", step, " of ", total, ", warm-up ",
              warmup);
  if (step < warmup) return lr * static_cast<float>(step + 1) / static_cast<float>(warmup);
  switch (s) {
    case LrSchedule::Constant: return lr;
    case LrSchedule::Step: {
      const double at = static_cast<double>(step) / static_cast<double>(total);
      return at >= 0.75 ? lr * 0.01f : at >= 0.5 ? lr * 0.1f : lr;
    }
    case LrSchedule::Cosine: {
      const int64_t span = std::max<int64_t>(1, total - warmup);
      const double progress = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span));
      return static_cast<float>(lr * 0.5 * (1.0 + std::cos(3.141592653589793 * progress)));
    }
  }
  return lr;
}

}  // namespace trick
