#include "layers/module.h"

#include <cmath>
#include <set>
#include <sstream>

#include "autograd/profile.h"
#include "kernels/conv.h"
#include "kernels/pointwise.h"

namespace trick {

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, m] : modules_) m->train(on);
}

std::vector<std::pair<std::string, Var*>> Module::named_parameters(const std::string& prefix) {
  std::vector<std::pair<std::string, Var*>> out;
  for (auto& [name, p] : params_)
    if (p->defined()) out.emplace_back(prefix + name, p);
  for (auto& [name, m] : modules_) {
    auto sub = m->named_parameters(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Module::named_buffers(const std::string& prefix) {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (auto& [name, t] : buffers_)
    if (t->defined()) out.emplace_back(prefix + name, t);
  for (auto& [name, m] : modules_) {
    auto sub = m->named_buffers(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Var*> Module::parameters() {
  std::vector<Var*> out;
  for (auto& [name, p] : named_parameters()) out.push_back(p);
  return out;
}

void Module::set_requires_grad(bool on) {
  for (Var* p : parameters()) p->set_requires_grad(on);
}

void Module::zero_grad() {
  for (Var* p : parameters()) p->zero_grad();
}

void Module::to(Device device) {
  for (auto& [name, p] : named_parameters()) {
    if (p->value().device() == device) continue;
    const bool rg = p->requires_grad();
    *p = Var(p->value().to(device), rg);
  }
  for (auto& [name, t] : named_buffers())
    if (t->device() != device) *t = t->to(device);
}

int64_t Module::parameter_count() {
  int64_t n = 0;
  for (Var* p : parameters()) n += p->value().numel();
  return n;
}

StateDict Module::state_dict() {
  StateDict out;
  for (auto& [name, p] : named_parameters()) out[name] = p->value();
  for (auto& [name, t] : named_buffers()) out[name] = *t;
  return out;
}

void Module::load_state_dict(const StateDict& state) {
  TRICK_CHECK(!FrozenConvWeights::open(),
              "load_state_dict while convolution weights are declared frozen (a FrozenConvWeights scope is open)");
  std::map<std::string, Tensor*> mine;
  for (auto& [name, p] : named_parameters()) mine[name] = &p->mutable_value();
  for (auto& [name, t] : named_buffers()) mine[name] = t;
  std::vector<std::string> missing, unexpected, misshaped;
  for (auto& [name, t] : mine) {
    auto it = state.find(name);
    if (it == state.end())
      missing.push_back(name);
    else if (it->second.shape() != t->shape())
      misshaped.push_back(cat(name, " (file ", it->second.shape().str(), ", model ", t->shape().str(), ")"));
  }
  for (auto& [name, t] : state)
    if (!mine.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty()) {
    std::ostringstream os;
    auto list = [&os](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      os << " " << v.size() << " " << what << ": ";
      for (size_t i = 0; i < v.size() && i < 8; ++i) os << (i ? ", " : "") << v[i];
      if (v.size() > 8) os << ", ...";
      os << ";";
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("with the wrong shape", misshaped);
    std::string s = os.str();
    s.pop_back();
    fail("weights do not match the model:", s);
  }
  for (auto& [name, t] : mine) t->copy_from(state.at(name));
}

Conv2d::Conv2d(const Conv2dOptions& o, const std::string& name) {
  TRICK_CHECK(o.in > 0 && o.out > 0 && o.kernel_h > 0 && o.kernel_w > 0 && o.stride > 0, "Conv2d ", name,
              ": sizes must be positive");
  weight = Var(Tensor::zeros(Shape{o.out, o.kernel_h, o.kernel_w, o.in}), true);
  if (o.bias) bias = Var(Tensor::zeros(Shape{o.out}), true);
  params_ = Conv2dParams::same(o.stride, o.pad_h, o.pad_w, o.relu);
  params_.name = name;
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

Var Conv2d::forward(const Var& x, Tensor out) {
  LayerScope layer(params_.name);
  return conv2d(x, weight, bias, params_, out);
}

void Conv2d::reset_parameters(Rng& rng) {
  const Shape s = weight.shape();
  const float stddev = std::sqrt(2.f / static_cast<float>(s[1] * s[2] * s[3]));
  weight.mutable_value().copy_from(randn(s, rng, stddev));
  if (bias.defined()) bias.mutable_value().fill(0.f);
}

void Conv2d::fold_batch_norm(const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var,
                             float eps) {
  const int64_t o = weight.shape()[0];
  for (const Tensor* t : {&gamma, &beta, &mean, &var})
    TRICK_CHECK(t->shape() == Shape{o}, "fold_batch_norm ", params_.name, ": batch-norm tensor of shape ",
                t->shape().str(), " for a conv with ", o, " output channels");
  const std::vector<float> g = gamma.to_vector(), b = beta.to_vector(), m = mean.to_vector(), v = var.to_vector();
  std::vector<float> w = weight.value().to_vector();
  std::vector<float> nb = bias.defined() ? bias.value().to_vector() : std::vector<float>(o, 0.f);
  const int64_t per = weight.value().numel() / o;
  for (int64_t i = 0; i < o; ++i) {
    TRICK_CHECK(v[i] >= 0.f, "fold_batch_norm ", params_.name, ": negative running variance ", v[i],
                " in channel ", i);
    const double scale = g[i] / std::sqrt(static_cast<double>(v[i]) + eps);
    for (int64_t j = 0; j < per; ++j) w[i * per + j] = static_cast<float>(w[i * per + j] * scale);
    nb[i] = static_cast<float>(b[i] + (nb[i] - m[i]) * scale);
  }
  const Device dev = weight.value().device();
  const bool rg = weight.requires_grad();
  weight = Var(Tensor::from_vector(weight.shape(), w).to(dev), rg);
  bias = Var(Tensor::from_vector(Shape{o}, nb).to(dev), rg);
}

BatchNorm2d::BatchNorm2d(int64_t channels, float eps_, float momentum_) : eps(eps_), momentum(momentum_) {
  weight = Var(Tensor::full(Shape{channels}, 1.f), true);
  bias = Var(Tensor::zeros(Shape{channels}), true);
  running_mean = Tensor::zeros(Shape{channels});
  running_var = Tensor::full(Shape{channels}, 1.f);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
  register_buffer("running_mean", &running_mean);
  register_buffer("running_var", &running_var);
}

void BatchNorm2d::eval_affine(Tensor& scale, Tensor& shift) const {
  const std::vector<float> g = weight.value().to_vector(), b = bias.value().to_vector(),
                           m = running_mean.to_vector(), v = running_var.to_vector();
  std::vector<float> s(g.size()), t(g.size());
  for (size_t i = 0; i < g.size(); ++i) {
    s[i] = static_cast<float>(g[i] / std::sqrt(static_cast<double>(v[i]) + eps));
    t[i] = b[i] - m[i] * s[i];
  }
  const Device dev = weight.value().device();
  scale = Tensor::from_vector(Shape{static_cast<int64_t>(g.size())}, s).to(dev);
  shift = Tensor::from_vector(Shape{static_cast<int64_t>(g.size())}, t).to(dev);
}

Var BatchNorm2d::forward(const Var& x, bool relu) {
  if (is_training()) {
    Var y = batch_norm_train(x, weight, bias, running_mean, running_var, eps, momentum);
    return relu ? trick::relu(y) : y;
  }
  Tensor scale, shift;
  eval_affine(scale, shift);
  return channel_affine(x, scale, shift, relu);
}

namespace {
Conv2dOptions without_bias_and_relu(Conv2dOptions o) {
  o.bias = false;
  o.relu = false;
  return o;
}
}  // namespace

ConvBnRelu::ConvBnRelu(const Conv2dOptions& o, float bn_eps, const std::string& name)
    : conv(without_bias_and_relu(o), name), bn(o.out, bn_eps) {
  register_module("conv", &conv);
  register_module("bn", &bn);
}

namespace {
thread_local ActivationObserver g_observer;
}

ActivationObserverScope::ActivationObserverScope(ActivationObserver observer) : previous_(std::move(g_observer)) {
  g_observer = std::move(observer);
}
ActivationObserverScope::~ActivationObserverScope() { g_observer = std::move(previous_); }

void observe_activation(const std::string& name, const Tensor& value) {
  if (g_observer) g_observer(name, value);
}

Var ConvBnRelu::forward(const Var& x, Tensor out) {
  LayerScope layer(conv.params().name);  // conv, batch norm and ReLU: one layer of a profile
  Var y;
  if (folded_) {
    y = conv.forward(x, out);
  } else {
    y = bn.forward(conv.forward(x), true);
    if (out.defined()) y = concat_into({y}, out);
  }
  observe_activation(conv.params().name, y.value());
  return y;
}

void ConvBnRelu::fold() {
  if (folded_) return;
  conv.fold_batch_norm(bn.weight.value(), bn.bias.value(), bn.running_mean, bn.running_var, bn.eps);
  conv.set_relu(true);
  folded_ = true;
}

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  TRICK_CHECK(in > 0 && out > 0, "Linear: sizes must be positive, got ", in, " -> ", out);
  weight = Var(Tensor::zeros(Shape{out, in}), true);
  if (with_bias) bias = Var(Tensor::zeros(Shape{out}), true);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

void Linear::reset_parameters(Rng& rng) {
  const float bound = 1.f / std::sqrt(static_cast<float>(weight.shape()[1]));
  weight.mutable_value().copy_from(rand_uniform(weight.shape(), rng, -bound, bound));
  if (bias.defined()) bias.mutable_value().copy_from(rand_uniform(bias.shape(), rng, -bound, bound));
}

}  // namespace trick
