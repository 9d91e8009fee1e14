// The attack step as one CUDA graph (see attack/graph_step.h).
#include "attack/graph_step.h"

#include <cmath>
#include <cstring>

#include "kernels/attack.h"
#include "kernels/pointwise.h"
#include "kernels/reduce.h"
#include "layers/ops.h"
#include "models/preprocess.h"

#ifdef TRICK_WITH_CUDA
#include "kernels/cuda/graph.h"
#endif

namespace trick {

bool graph_step_supported(const AttackSettings& s, Device device, std::string* why) {
  auto no = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  if (!s.cuda_graph) return no("CUDA graphs are off (--no-graph)");
  if (!device.is_cuda()) return no("the model is on the CPU");
#ifndef TRICK_WITH_CUDA
  return no("this build of trick has no CUDA support");
#endif
  switch (s.method) {
    case AttackMethod::Cw: return no("cw runs its own loop (binary search over its constant), eagerly");
    case AttackMethod::Adam: return no("adam's update depends on the step count, a host value that changes every step");
    case AttackMethod::MiFgsm: return no("mifgsm's update is scaled by the gradient's L1 norm, read on the host");
    case AttackMethod::Pgd:
      if (s.ball == Ball::L2) return no("pgd with the L2 ball scales its step by the gradient norm, read on the host");
      break;
    case AttackMethod::Descent:
    case AttackMethod::Fgsm:
    case AttackMethod::Bim: break;
  }
  if (why) why->clear();
  return true;
}

void unpack_readout(const std::vector<float>& packed, int64_t k, const std::vector<int64_t>& numels,
                    GraphStepResult& out) {
  const int64_t cols = k + kReadoutExtra;
  const size_t n = numels.size();
  TRICK_CHECK(k >= 1 && packed.size() == n * static_cast<size_t>(cols), "graph step: readout of ", packed.size(),
              " values for ", n, " items of ", k, " classes (expected ", n * static_cast<size_t>(cols), ")");
  out.probs.assign(n, {});
  out.loss.assign(n, 0.0);
  out.ce.assign(n, 0.0);
  out.grad_norm.assign(n, 0.f);
  out.linf.assign(n, 0.f);
  out.l2.assign(n, 0.f);
  out.l0.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const float* row = packed.data() + i * static_cast<size_t>(cols);
    out.probs[i].assign(row, row + k);
    out.loss[i] = row[k];
    out.ce[i] = row[k + 1];
    out.grad_norm[i] = std::sqrt(row[k + 2]);  // as the eager loop: sqrt of the float sum of squares
    out.linf[i] = row[k + 3];
    out.l2[i] = static_cast<float>(std::sqrt(static_cast<double>(row[k + 4])));
    // The count of |d| < 0.5 is an exact integer in float up to 2^24 per item (the device
    // sums in double); l0 counts the rest.
    out.l0[i] = numels[i] - static_cast<int64_t>(std::llround(static_cast<double>(row[k + 5])));
  }
}

namespace {

// The model's logits for images given as Vars of shape (H, W, C): the same ops, in the
// same order, as attack.cpp's forward_images (the graph must replay the eager step).
Var forward_images(Model& model, const std::vector<Var>& images, bool raw) {
  const Preprocess p = raw ? Preprocess{} : model.preprocess();
  std::vector<Var> inputs;
  for (const Var& x : images) {
    const Shape s = x.shape();
    inputs.push_back(
        apply_preprocess(reshape(x, Shape{1, s[0], s[1], s[2]}), p, model.input_height(), model.input_width()));
  }
  return model.forward(concat_batch(inputs));
}

struct Key {
  const float* data;
  Shape shape;
  int label;
  uint32_t lr_bits;
  bool operator==(const Key& o) const {
    return data == o.data && shape == o.shape && label == o.label && lr_bits == o.lr_bits;
  }
};

Key key_of(const GraphStepItem& it) {
  uint32_t bits = 0;
  std::memcpy(&bits, &it.lr, sizeof bits);
  return Key{it.x->data(), it.x->shape(), it.label, bits};
}

}  // namespace

struct GraphStep::Impl {
  Model& model;
  const AttackSettings& s;
  Device dev;
  bool enabled = false;
  std::string reason;
  int failures = 0;
  int captures = 0;
#ifdef TRICK_WITH_CUDA
  cuda::Graph graph;
#endif
  // The captured set. The tensors are handles to the buffers the graph reads and writes,
  // kept alive while it may be replayed.
  std::vector<Key> key;
  std::vector<Key> warmed;  // the set whose step last ran eagerly (run() captures only that one)
  std::vector<Tensor> xs, x0s, snapshots;
  std::vector<float> lrs;
  std::vector<int64_t> numels;
  Tensor packed;  // (N, k + kReadoutExtra)
  Tensor labels;  // (N) class indices as floats
  Tensor seed;    // (N) ones: the gradient of sum(objective) with respect to the objective
  int64_t k = 0;

  Impl(Model& m, const AttackSettings& settings) : model(m), s(settings), dev(m.device()) {
    enabled = graph_step_supported(s, dev, &reason);
  }

  // A one-element view of the readout: item j, column c.
  Tensor cell(size_t j, int64_t c) {
    return packed.slice_first(static_cast<int64_t>(j), static_cast<int64_t>(j) + 1).slice_last(c, c + 1).reshape(
        Shape{1});
  }

  // values (N) -> column c of the readout
  void to_column(const Tensor& values, int64_t c) {
    Tensor dst = packed.slice_last(c, c + 1);
    copy(values.reshape(Shape{values.numel(), 1}), dst);
  }

  // Perturbation norms of xs[j] (as it is now) into item j's readout columns.
  void device_norms(size_t j) {
    const Tensor& x = xs[j];
    Tensor d = Tensor::empty(x.shape(), dev);
    binary(BinaryOp::Sub, x, x0s[j], d);
    unary(UnaryOp::Affine, d, d, 255.f, 0.f);  // 8-bit units, as perturbation_norms
    const Tensor flat = d.reshape(Shape{1, numels[j]});
    Tensor c_linf = cell(j, k + 3), c_l2 = cell(j, k + 4), c_below = cell(j, k + 5);
    max_abs_per_item(flat, c_linf);
    sum_per_item(flat, true, c_l2);
    // 1 where |d| < 0.5, else 0: clamp(sign(0.5 - |d|), 0, 1)
    unary(UnaryOp::Abs, d, d);
    unary(UnaryOp::Affine, d, d, -1.f, 0.5f);
    unary(UnaryOp::Sign, d, d);
    unary(UnaryOp::Clamp, d, d, 0.f, 1.f);
    sum_per_item(flat, false, c_below);
  }

  // The captured step (attack.cpp: evaluate(grad = true) + update + project).
  void body() {
    std::vector<Var> vars;
    for (const Tensor& x : xs) vars.emplace_back(x, true);
    Var logits = forward_images(model, vars, s.raw_input);
    Var ce = cross_entropy(logits, labels);
    Var objective = s.targeted ? ce : affine(ce, -1.f, 0.f);
    {
      NoGradScope no_grad;
      const Tensor probs = softmax(logits.detach()).value();
      Tensor dst = packed.slice_last(0, k);
      copy(probs, dst);
    }
    to_column(objective.value(), k);
    to_column(ce.value(), k + 1);
    // The eager loop calls sum(objective).backward(): the sum's backward hands the
    // objective a gradient of ones, exactly this seed (and reads nothing on the host).
    objective.backward(seed);
    for (size_t j = 0; j < xs.size(); ++j) {
      const Tensor g = vars[j].grad();
      Tensor c_grad = cell(j, k + 2);
      sum_per_item(g.reshape(Shape{1, g.numel()}), true, c_grad);
      copy(xs[j], snapshots[j]);
      device_norms(j);
      if (s.method == AttackMethod::Descent)
        axpy(-lrs[j], g, xs[j]);
      else
        sign_step(xs[j], g, s.step);
      project_linf(xs[j], x0s[j], s.eps);  // every supported method uses the L-inf ball
    }
  }

  bool capture_for(const std::vector<GraphStepItem>& items) {
#ifdef TRICK_WITH_CUDA
    graph.reset();  // the old graph and its memory go before the new one is captured
    key.clear();
    xs.clear(), x0s.clear(), snapshots.clear(), lrs.clear(), numels.clear();
    k = model.classes();
    std::vector<float> lab;
    for (const GraphStepItem& it : items) {
      xs.push_back(*it.x);
      x0s.push_back(*it.x0);
      snapshots.push_back(Tensor::empty(it.x->shape(), dev));
      lrs.push_back(it.lr);
      numels.push_back(it.x->numel());
      lab.push_back(static_cast<float>(it.label));
    }
    const int64_t n = static_cast<int64_t>(items.size());
    labels = Tensor::from_vector(Shape{n}, lab).to(dev);
    seed = Tensor::full(Shape{n}, 1.f, dev);
    packed = Tensor::empty(Shape{n, k + kReadoutExtra}, dev);
    // The eager first step ran everything else the body runs; run what it did not (the
    // norms) once eagerly too, so no workspace has to grow inside the capture.
    for (size_t j = 0; j < xs.size(); ++j) device_norms(j);
    try {
      graph.capture(dev, [this] { body(); });
    } catch (const Error& e) {
      reason = e.what();
      if (++failures >= 2) enabled = false;
      graph.reset();
      xs.clear(), x0s.clear(), snapshots.clear();
      return false;
    }
    ++captures;
    for (const GraphStepItem& it : items) key.push_back(key_of(it));
    return true;
#else
    (void)items;
    return false;
#endif
  }
};

GraphStep::GraphStep(Model& model, const AttackSettings& settings) : impl_(std::make_unique<Impl>(model, settings)) {}
GraphStep::~GraphStep() = default;

bool GraphStep::enabled() const { return impl_->enabled; }
const std::string& GraphStep::fallback_reason() const { return impl_->reason; }
int GraphStep::captures() const { return impl_->captures; }
int GraphStep::capture_failures() const { return impl_->failures; }

void GraphStep::note_eager(const std::vector<GraphStepItem>& items) {
  impl_->warmed.clear();
  for (const GraphStepItem& it : items) impl_->warmed.push_back(key_of(it));
}

size_t GraphStep::nodes() const {
#ifdef TRICK_WITH_CUDA
  return impl_->graph.nodes();
#else
  return 0;
#endif
}

bool GraphStep::run(const std::vector<GraphStepItem>& items, GraphStepResult& out) {
  Impl& m = *impl_;
  if (!m.enabled || items.empty()) return false;
  for (const GraphStepItem& it : items) {
    TRICK_CHECK(it.x && it.x0 && it.x->device() == m.dev && it.x->is_contiguous() && it.x0->shape() == it.x->shape(),
                "graph step: item images must be contiguous, on ", m.dev.str(), ", the same shape as the originals");
    // While descent's rate is 0 the eager loop reads the gradient's maximum every step.
    if (m.s.method == AttackMethod::Descent && it.lr == 0.f) return false;
  }
  std::vector<Key> now;
  for (const GraphStepItem& it : items) now.push_back(key_of(it));
  const bool same = now == m.key;
#ifdef TRICK_WITH_CUDA
  if (!same) {
    // A set not yet captured is captured only after a step of it ran eagerly (the attack's
    // first step, or the step after an image finished: false here, and the caller's eager
    // evaluate + update is that step), so that every shape of its batch ran outside a
    // capture: cuDNN measures its algorithms for them (never inside a capture), and
    // workspaces (split-K partials for a smaller batch) grow then, not inside the capture,
    // where growing fails it. The old graph and its memory go now.
    if (!(now == m.warmed)) {
      m.warmed = std::move(now);
      m.graph.reset();
      m.key.clear();
      return false;
    }
  }
  if (!(same && m.graph.ready()) && !m.capture_for(items)) return false;
  m.graph.replay();
  m.graph.sync();
  unpack_readout(m.packed.to_vector(), m.k, m.numels, out);
  for (double l : out.loss)
    TRICK_CHECK(std::isfinite(l), "attack: the loss is not finite (NaN or Inf in the weights or the image?)");
  out.evaluated = m.snapshots;
  return true;
#else
  (void)same;
  (void)out;
  return false;
#endif
}

}  // namespace trick
