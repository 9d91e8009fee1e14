#include "attack/attack.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "attack/graph_step.h"
#include "attack/losses.h"
#include "kernels/attack.h"
#include "kernels/conv.h"
#include "kernels/pointwise.h"
#include "kernels/reduce.h"
#include "layers/ops.h"
#include "models/preprocess.h"
#include "tensor/random.h"

namespace trick {

namespace {

const char* const kMethodNames[] = {"descent", "fgsm", "bim", "pgd", "mifgsm", "adam", "cw"};

}  // namespace

AttackMethod parse_attack_method(const std::string& name) {
  for (int i = 0; i < 7; ++i)
    if (name == kMethodNames[i]) return static_cast<AttackMethod>(i);
  fail("--method: unknown method '", name, "' (known: descent, fgsm, bim, pgd, mifgsm, adam, cw)");
}

const char* attack_method_name(AttackMethod m) { return kMethodNames[static_cast<int>(m)]; }

Ball parse_ball(const std::string& name) {
  if (name == "linf" || name == "Linf" || name == "inf") return Ball::Linf;
  if (name == "l2" || name == "L2") return Ball::L2;
  fail("--norm: unknown norm '", name, "' (known: linf, l2)");
}

const char* ball_name(Ball b) { return b == Ball::Linf ? "linf" : "l2"; }

void validate(const AttackSettings& s) {
  if (s.ball == Ball::Linf)
    TRICK_CHECK(std::isfinite(s.eps) && s.eps >= 0.f && s.eps <= 1.f, "--eps must be in [0, 255] (8-bit units), got ",
                s.eps * 255.f);
  else
    TRICK_CHECK(std::isfinite(s.eps) && s.eps > 0.f && s.eps <= 1e6f, "--eps must be positive for the L2 ball, got ",
                s.eps * 255.f);
  TRICK_CHECK(std::isfinite(s.step) && s.step > 0.f && s.step <= 1.f, "--step must be in (0, 255] (8-bit units), got ",
              s.step * 255.f);
  TRICK_CHECK(s.steps >= 1 && s.steps <= 100000, "--steps must be in [1, 100000], got ", s.steps);
  TRICK_CHECK(std::isfinite(s.confidence) && s.confidence > 0.f && s.confidence <= 1.f,
              "--confidence must be in (0, 1], got ", s.confidence);
  TRICK_CHECK(s.restarts >= 1 && s.restarts <= 1000, "--restarts must be in [1, 1000], got ", s.restarts);
  TRICK_CHECK(s.restarts == 1 || s.method != AttackMethod::Cw, "--restarts ", s.restarts,
              " is not for --method cw: it runs once, its --cw-search rounds take the place of restarts");
  TRICK_CHECK(s.restarts == 1 || s.random_start,
              "--restarts ", s.restarts, " needs a random start (--random-start; pgd has one unless "
              "--no-random-start): without one every restart repeats the first run exactly");
  TRICK_CHECK(std::isfinite(s.momentum) && s.momentum >= 0.f, "--momentum must be >= 0, got ", s.momentum);
  TRICK_CHECK(s.beta1 >= 0.f && s.beta1 < 1.f && s.beta2 >= 0.f && s.beta2 < 1.f, "adam betas must be in [0, 1)");
  TRICK_CHECK(std::isfinite(s.kappa) && s.kappa >= 0.f, "--kappa must be >= 0, got ", s.kappa);
  TRICK_CHECK(std::isfinite(s.cw_c) && s.cw_c > 0.f, "--cw-c must be > 0, got ", s.cw_c);
  TRICK_CHECK(s.cw_search >= 1 && s.cw_search <= 50, "--cw-search must be in [1, 50], got ", s.cw_search);
  TRICK_CHECK(std::isfinite(s.cw_lr) && s.cw_lr > 0.f, "--cw-lr must be > 0, got ", s.cw_lr);
  TRICK_CHECK(s.refine_steps >= 0 && s.refine_steps <= 10000, "--refine-steps must be in [0, 10000], got ",
              s.refine_steps);
  TRICK_CHECK(s.ball == Ball::Linf || s.method == AttackMethod::Pgd || s.method == AttackMethod::Cw,
              "--norm l2 is for --method pgd (cw always minimises L2)");
}

namespace {

using Clock = std::chrono::steady_clock;

// Per-item state of one run.
struct Item {
  Tensor x0;     // (H, W, C) original, on the device
  Tensor x;      // current image
  Tensor m, v;   // momentum / Adam moments (or cw's tanh variable w in m)
  float lr = 0;  // descent's fixed learning rate, set at the first update
  float c = 1;   // cw constant
  int t = 0;     // Adam step counter
  int steps = 0;
  bool active = true;
  bool float_success = false;
  bool needs_refine = false;
};

struct Norms {
  float linf = 0, l2 = 0;
  int64_t l0 = 0;
};

Norms perturbation_norms(const Tensor& x, const Tensor& x0) {
  // On the host, read in place: copies of a 12-megapixel photo cost more than the sums.
  const bool in_place = x.device().is_cpu() && x0.device().is_cpu() && x.is_contiguous() && x0.is_contiguous();
  std::vector<float> ca, cb;
  if (!in_place) ca = x.to_vector(), cb = x0.to_vector();
  const float* a = in_place ? x.data() : ca.data();
  const float* b = in_place ? x0.data() : cb.data();
  const size_t count = static_cast<size_t>(x.numel());
  Norms n;
  double s = 0;
  for (size_t i = 0; i < count; ++i) {
    const float d = (a[i] - b[i]) * 255.f;
    n.linf = std::max(n.linf, std::fabs(d));
    s += static_cast<double>(d) * d;
    n.l0 += std::fabs(d) >= 0.5f;
  }
  n.l2 = static_cast<float>(std::sqrt(s));
  return n;
}

// The model's logits for images given as Vars of shape (H, W, C).
Var forward_images(Model& model, const std::vector<Var>& images, bool raw) {
  const Preprocess p = raw ? Preprocess{} : model.preprocess();
  std::vector<Var> inputs;
  for (const Var& x : images) {
    const Shape s = x.shape();
    inputs.push_back(apply_preprocess(reshape(x, Shape{1, s[0], s[1], s[2]}), p, model.input_height(),
                                      model.input_width()));
  }
  return model.forward(concat_batch(inputs));
}

std::vector<float> row(const std::vector<float>& all, int64_t k, size_t i) {
  return std::vector<float>(all.begin() + static_cast<int64_t>(i) * k, all.begin() + static_cast<int64_t>(i + 1) * k);
}

int argmax(const std::vector<float>& p) { return static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin()); }

std::vector<ClassProb> top_classes(const std::vector<float>& p, int k) {
  std::vector<int> idx(p.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min<int>(k, static_cast<int>(p.size()));
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  std::vector<ClassProb> out;
  for (int i = 0; i < k; ++i) out.push_back({idx[i], p[idx[i]]});
  return out;
}

bool is_success(const AttackSettings& s, const std::vector<float>& probs, int label) {
  if (!s.targeted) return argmax(probs) != label;
  if (s.method == AttackMethod::Cw) return argmax(probs) == label;  // cw's margin is checked on logits
  return probs[label] >= s.confidence && argmax(probs) == label;
}

class Attack {
 public:
  Attack(Model& model, const std::vector<AttackItem>& items, const AttackSettings& s, const StepObserver& observer)
      : model_(model), items_(items), s_(s), observer_(observer), start_(Clock::now()),
        seen_(items.size()), seen_done_(items.size(), false) {
    dev_ = model.device();
    k_ = model.classes();
    labels_host_.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i) labels_host_[i] = items[i].label;
    grid_eps_ = std::floor(s.eps * 255.f + 1e-3f) / 255.f;
  }

  std::vector<ItemResult> run() {
    std::vector<Tensor> originals;
    for (const AttackItem& it : items_) originals.push_back(it.image.contiguous().to(dev_));
    const std::vector<std::vector<float>> p0 = probs_of(originals);
    // An original that already passes keeps its pixels: no random start (whose noise would be
    // saved as the "adversarial" image of a success at step 0).
    original_passes_.resize(items_.size());
    for (size_t i = 0; i < items_.size(); ++i) original_passes_[i] = is_success(s_, p0[i], labels_host_[i]);
    std::vector<ItemResult> best(items_.size());
    std::vector<bool> have(items_.size(), false);
    const int runs = s_.method == AttackMethod::Cw ? 1 : s_.restarts;
    for (int r = 0; r < runs; ++r) {
      std::vector<size_t> todo;
      for (size_t i = 0; i < items_.size(); ++i)
        if (!have[i] || !best[i].success_8bit) todo.push_back(i);
      if (todo.empty()) break;
      std::vector<ItemResult> got = s_.method == AttackMethod::Cw ? run_cw(originals, todo) : run_once(originals, todo, r);
      for (size_t j = 0; j < todo.size(); ++j) {
        const size_t i = todo[j];
        if (!have[i]) {
          best[i] = std::move(got[j]);
          have[i] = true;
          continue;
        }
        // Keep every run's trace; the result is the better run's.
        std::vector<StepRecord> trace = std::move(best[i].trace);
        trace.insert(trace.end(), got[j].trace.begin(), got[j].trace.end());
        std::string graph_failure = got[j].graph_failure.empty() ? best[i].graph_failure : got[j].graph_failure;
        if (better(got[j], best[i], labels_host_[i])) best[i] = std::move(got[j]);
        best[i].trace = std::move(trace);
        best[i].graph_failure = std::move(graph_failure);
      }
    }
    for (size_t i = 0; i < items_.size(); ++i) best[i].original_probs = p0[i];
    return best;
  }

 private:
  bool better(const ItemResult& a, const ItemResult& b, int label) const {
    if (a.success_8bit != b.success_8bit) return a.success_8bit;
    if (a.success_float != b.success_float) return a.success_float;
    const float pa = a.final_probs[label], pb = b.final_probs[label];
    if (pa != pb) return s_.targeted ? pa > pb : pa < pb;
    return a.l2 < b.l2;
  }

  std::vector<std::vector<float>> probs_of(const std::vector<Tensor>& images) {
    NoGradScope no_grad;
    std::vector<Var> vs;
    for (const Tensor& t : images) vs.push_back(Var(t));
    const std::vector<float> all = softmax(forward_images(model_, vs, s_.raw_input)).value().to_vector();
    std::vector<std::vector<float>> out;
    for (size_t i = 0; i < images.size(); ++i) out.push_back(row(all, k_, i));
    return out;
  }

  // The image as it will be saved: on the 8-bit grid and inside the ball.
  Tensor snap(const Tensor& x, const Tensor& x0) const {
    Tensor q = x.clone();
    round_to_8bit(q);
    if (s_.method == AttackMethod::Cw) return q;
    if (s_.ball == Ball::Linf) {
      project_linf(q, x0, grid_eps_);
      round_to_8bit(q);  // undo float error: x0 and the bounds are on the grid
      return q;
    }
    if (perturbation_norms(q, x0).l2 <= s_.eps * 255.f) return q;
    // Nearest rounding left the L2 ball: round every change toward zero instead (never longer).
    std::vector<float> a = x.to_vector();
    const std::vector<float> b = x0.to_vector();
    for (size_t i = 0; i < a.size(); ++i) {
      const float d = std::trunc((a[i] - b[i]) * 255.f + (a[i] > b[i] ? 1e-3f : -1e-3f));
      a[i] = std::min(1.f, std::max(0.f, b[i] + d / 255.f));
    }
    Tensor out = Tensor::from_vector(x.shape(), a).to(x.device());
    round_to_8bit(out);
    return out;
  }

  // 1 where a pixel of image i reaches the model's input through its resize + crop, 0 where
  // it does not (outside the centre crop and its resampling support): from the gradient of
  // the sum of the transformed image, whose resampling weights are not negative. Empty when
  // every pixel reaches it.
  const std::vector<float>& seen_pixels(size_t i) {
    if (seen_done_[i]) return seen_[i];
    seen_done_[i] = true;
    if (s_.raw_input) return seen_[i];
    const Tensor& x0 = items_[i].image;
    const Shape s = x0.shape();
    Var x(x0.contiguous().clone(), true);
    sum(apply_preprocess(reshape(x, Shape{1, s[0], s[1], s[2]}), model_.preprocess(), model_.input_height(),
                         model_.input_width()))
        .backward();
    std::vector<float> m = x.grad().to_vector();
    bool all = true;
    for (float& v : m) v = v > 0.f ? 1.f : 0.f, all = all && v == 1.f;
    if (!all) seen_[i] = std::move(m);
    return seen_[i];
  }

  // Each image's start is drawn from its own stream, seeded by (seed, image, restart): the
  // same whichever other images share the batch and whichever of them are still running. It
  // touches only the pixels the model sees: noise elsewhere would never be undone (no gradient
  // reaches it) and would be saved, counted in the norms, as the change.
  void random_start(Item& it, size_t image, int round) {
    Rng mix(s_.seed ^ (0x9e3779b97f4a7c15ULL * (image + 1)) ^ (0xbf58476d1ce4e5b9ULL * (static_cast<uint64_t>(round) + 1)));
    Rng rng(mix.next_u64());
    const Shape s = it.x.shape();
    const std::vector<float>& seen = seen_pixels(image);
    auto mask = [&](Tensor& d) {  // on the host
      if (seen.empty()) return;
      float* v = d.data();
      for (size_t k = 0; k < seen.size(); ++k) v[k] *= seen[k];
    };
    if (s_.ball == Ball::Linf) {
      Tensor d = rand_uniform(s, rng, -s_.eps, s_.eps);
      mask(d);
      it.x.copy_from(d.to(dev_));
    } else {
      Tensor d = randn(s, rng);
      mask(d);
      double n = 0;
      for (float v : d.to_vector()) n += static_cast<double>(v) * v;
      const float radius = static_cast<float>(s_.eps * rng.uniform() / std::max(std::sqrt(n), 1e-12));
      unary(UnaryOp::Affine, d, d, radius, 0.f);
      it.x.copy_from(d.to(dev_));
    }
    axpy(1.f, it.x0, it.x);
    project(it);
  }

  void project(Item& it) const {
    if (s_.ball == Ball::Linf)
      project_linf(it.x, it.x0, s_.eps);
    else
      project_l2(it.x, it.x0, s_.eps);
  }

  StepRecord record(size_t i, const Item& it, int step, int round, bool refine, double loss, double ce,
                    const std::vector<float>& probs, float grad_norm, const Norms* norms = nullptr) const {
    StepRecord r;
    r.step = step;
    r.round = round;
    r.refine = refine;
    r.loss = loss;
    r.cross_entropy = ce;
    r.label_prob = probs[labels_host_[i]];
    r.top5 = top_classes(probs, 5);
    r.top1 = r.top5.front();
    const Norms n = norms ? *norms : perturbation_norms(it.x, it.x0);
    r.linf = n.linf, r.l2 = n.l2, r.l0 = n.l0;
    r.grad_norm = grad_norm;
    if (s_.method == AttackMethod::Cw && !refine) r.cw_c = it.c;
    r.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    return r;
  }

  void notify(size_t i, const StepRecord& r, const Tensor& image, const std::vector<float>& probs) const {
    if (!observer_) return;
    StepView v;
    v.item = static_cast<int>(i);
    v.record = &r;
    v.image = &image;
    v.probs = &probs;
    observer_(v);
  }

  // One forward (+ backward when `grad`) over the given items' current images.
  struct Eval {
    std::vector<std::vector<float>> probs;
    std::vector<double> loss, ce;
    std::vector<Tensor> grads;
    std::vector<float> grad_norms;
    // From a CUDA graph replay (attack/graph_step.h): norms computed on the device, and
    // each item's updated image (its x is the evaluated one until the loop commits).
    bool graphed = false;
    std::vector<Norms> norms;
    std::vector<Tensor> updated;
  };

  std::vector<GraphStepItem> graph_items(std::vector<Item*>& its, const std::vector<size_t>& ids) const {
    std::vector<GraphStepItem> gi;
    for (size_t a = 0; a < its.size(); ++a) gi.push_back({&its[a]->x, &its[a]->x0, labels_host_[ids[a]], its[a]->lr});
    return gi;
  }

  // The step from the CUDA graph, when it can run; false: run it eagerly.
  bool graph_eval(GraphStep& graph, std::vector<Item*>& its, const std::vector<size_t>& ids, Eval& e) {
    if (!graph.enabled()) return false;
    const std::vector<GraphStepItem> gi = graph_items(its, ids);
    GraphStepResult r;
    if (!graph.run(gi, r)) return false;
    e.probs = std::move(r.probs), e.loss = r.loss, e.ce = r.ce, e.grad_norms = r.grad_norm, e.graphed = true;
    for (size_t a = 0; a < its.size(); ++a) {
      e.norms.push_back(Norms{r.linf[a], r.l2[a], r.l0[a]});
      e.updated.push_back(its[a]->x);
      its[a]->x = r.evaluated[a];
    }
    return true;
  }

  Eval evaluate(std::vector<Item*>& its, const std::vector<size_t>& ids, bool grad, bool cw) {
    Eval e;
    std::vector<Var> xs;
    std::vector<Var> ws;
    for (Item* it : its) {
      if (cw) {
        // x = (tanh(w) + 1) / 2, w kept in it->m: also without a gradient (the last step of a
        // round), so the image evaluated is the one recorded and kept, not the one before it.
        Var w(it->m, grad);
        ws.push_back(w);
        xs.push_back(affine(tanh(w), 0.5f, 0.5f));
      } else {
        xs.push_back(Var(it->x, grad));
      }
    }
    std::vector<float> lab;
    for (size_t i : ids) lab.push_back(static_cast<float>(labels_host_[i]));
    const Tensor labels = Tensor::from_vector(Shape{static_cast<int64_t>(ids.size())}, lab).to(dev_);
    std::unique_ptr<NoGradScope> no_grad;
    if (!grad) no_grad = std::make_unique<NoGradScope>();
    Var logits = forward_images(model_, xs, s_.raw_input);
    Var ce = cross_entropy(logits, labels);
    Var objective = s_.targeted ? ce : affine(ce, -1.f, 0.f);
    if (cw) {
      std::vector<float> cs;
      for (Item* it : its) cs.push_back(it->c);
      Var margin = margin_loss(logits, labels, s_.kappa, s_.targeted);
      std::vector<Var> dist;
      for (size_t j = 0; j < its.size(); ++j) {
        Var d = sub(xs[j], Var(its[j]->x0));
        dist.push_back(reshape(sum(mul(d, d)), Shape{1}));
      }
      Var dists = concat_batch(dist);
      objective = add(dists, mul(margin, Var(Tensor::from_vector(Shape{static_cast<int64_t>(cs.size())}, cs).to(dev_))));
    }
    {
      NoGradScope ng;
      const std::vector<float> all = softmax(logits.detach()).value().to_vector();
      for (size_t j = 0; j < its.size(); ++j) e.probs.push_back(row(all, k_, j));
    }
    const std::vector<float> lv = objective.value().to_vector(), cv = ce.value().to_vector();
    e.loss.assign(lv.begin(), lv.end());
    e.ce.assign(cv.begin(), cv.end());
    e.grad_norms.assign(its.size(), 0.f);
    if (grad) {
      for (float l : lv)
        TRICK_CHECK(std::isfinite(l), "attack: the loss is not finite (NaN or Inf in the weights or the image?)");
      sum(objective).backward();
      for (size_t j = 0; j < its.size(); ++j) {
        const Tensor g = cw ? ws[j].grad() : xs[j].grad();
        e.grads.push_back(g);
        Tensor n = Tensor::empty(Shape{1}, dev_);
        sum_per_item(g.reshape(Shape{1, g.numel()}), true, n);
        e.grad_norms[j] = std::sqrt(n.item());
      }
    }
    return e;
  }

  void update(Item& it, const Tensor& g) {
    switch (s_.method) {
      case AttackMethod::Descent: {
        if (it.lr == 0.f) {  // fixed once: the first step changes the most-affected pixel by `step`
          Tensor n = Tensor::empty(Shape{1}, dev_);
          max_abs_per_item(g.reshape(Shape{1, g.numel()}), n);
          const float gmax = n.item();
          it.lr = gmax > 0.f ? s_.step / gmax : 0.f;
        }
        axpy(-it.lr, g, it.x);
        break;
      }
      case AttackMethod::Fgsm:
      case AttackMethod::Bim:
        sign_step(it.x, g, s_.step);
        break;
      case AttackMethod::Pgd:
        if (s_.ball == Ball::Linf) {
          sign_step(it.x, g, s_.step);
        } else {
          Tensor n = Tensor::empty(Shape{1}, dev_);
          sum_per_item(g.reshape(Shape{1, g.numel()}), true, n);
          const float norm = std::sqrt(n.item());
          if (norm > 0.f) axpy(-s_.step / norm, g, it.x);
        }
        break;
      case AttackMethod::MiFgsm: {
        Tensor a = Tensor::empty(g.shape(), dev_);
        unary(UnaryOp::Abs, g, a);
        Tensor n = Tensor::empty(Shape{1}, dev_);
        sum_per_item(a.reshape(Shape{1, a.numel()}), false, n);
        const float l1 = n.item();
        momentum_accumulate(it.m, g, s_.momentum, l1 > 0.f ? 1.f / l1 : 0.f);
        sign_step(it.x, it.m, s_.step);
        break;
      }
      case AttackMethod::Adam:
        adam_step(it.x, g, it.m, it.v, s_.step, s_.beta1, s_.beta2, 1e-8f, ++it.t, true);
        break;
      case AttackMethod::Cw:
        break;  // handled in run_cw
    }
    project(it);
  }

  // One run (a restart) of the iterative methods over the items `ids`.
  std::vector<ItemResult> run_once(const std::vector<Tensor>& originals, const std::vector<size_t>& ids, int round) {
    std::vector<Item> its(ids.size());
    std::vector<ItemResult> out(ids.size());
    for (size_t j = 0; j < ids.size(); ++j) {
      Item& it = its[j];
      it.x0 = originals[ids[j]];
      it.x = it.x0.clone();
      if (s_.method == AttackMethod::MiFgsm || s_.method == AttackMethod::Adam) it.m = Tensor::zeros(it.x.shape(), dev_);
      if (s_.method == AttackMethod::Adam) it.v = Tensor::zeros(it.x.shape(), dev_);
      if (s_.random_start && !original_passes_[ids[j]]) random_start(it, ids[j], round);
      out[j].best_run = round;
    }
    const int max_steps = s_.method == AttackMethod::Fgsm ? 1 : s_.steps;
    GraphStep graph(model_, s_);  // steps after the eager first one, from a CUDA graph when it can
    for (int step = 0;; ++step) {
      std::vector<Item*> act;
      std::vector<size_t> act_ids, act_j;
      for (size_t j = 0; j < its.size(); ++j)
        if (its[j].active) act.push_back(&its[j]), act_ids.push_back(ids[j]), act_j.push_back(j);
      if (act.empty()) break;
      const bool last = step >= max_steps;
      Eval e;
      if (last || step == 0 || !graph_eval(graph, act, act_ids, e)) e = evaluate(act, act_ids, !last, false);
      std::vector<size_t> finished;
      for (size_t a = 0; a < act.size(); ++a) {
        const size_t j = act_j[a], i = ids[j];
        StepRecord r = record(i, *act[a], step, round, false, e.loss[a], e.ce[a], e.probs[a], e.grad_norms[a],
                              e.graphed ? &e.norms[a] : nullptr);
        r.from_graph = e.graphed;
        out[j].trace.push_back(r);
        notify(i, r, act[a]->x, e.probs[a]);
        act[a]->steps = step;
        if (is_success(s_, e.probs[a], labels_host_[i])) {
          act[a]->float_success = true;
          act[a]->active = false;
          finished.push_back(j);
        } else if (last) {
          act[a]->active = false;
          finished.push_back(j);
        }
      }
      if (!last)
        for (size_t a = 0; a < act.size(); ++a)
          if (act[a]->active) {
            if (e.graphed)
              std::swap(act[a]->x, e.updated[a]);  // the replay already updated it
            else
              update(*act[a], e.grads[a]);
          }
      // A set is captured only after a step of it ran eagerly (graph_step.h).
      if (!last && !e.graphed && graph.enabled()) graph.note_eager(graph_items(act, act_ids));
      finish(its, ids, finished, out);
    }
    if (graph.capture_failures())
      for (ItemResult& o : out) o.graph_failure = graph.fallback_reason();
    refine(its, ids, out, round);
    return out;
  }

  // Rounds finished items to the 8-bit grid and checks them there.
  void finish(std::vector<Item>& its, const std::vector<size_t>& ids, const std::vector<size_t>& js,
              std::vector<ItemResult>& out) {
    if (js.empty()) return;
    std::vector<Tensor> snapped;
    for (size_t j : js) snapped.push_back(snap(its[j].x, its[j].x0));
    const std::vector<std::vector<float>> p = probs_of(snapped);
    for (size_t k = 0; k < js.size(); ++k) {
      const size_t j = js[k];
      ItemResult& r = out[j];
      r.adversarial_float = its[j].x.clone();
      r.adversarial = snapped[k];
      r.final_probs = p[k];
      r.success_float = its[j].float_success;
      r.success_8bit = is_success(s_, p[k], labels_host_[ids[j]]) &&
                       (s_.method != AttackMethod::Cw || margin_ok(its[j], snapped[k], ids[j]));
      r.steps = its[j].steps;
      its[j].needs_refine = r.success_float && !r.success_8bit && s_.refine_steps > 0;
      const Norms n = perturbation_norms(snapped[k], its[j].x0);
      r.linf = n.linf, r.l2 = n.l2, r.l0 = n.l0;
    }
  }

  bool margin_ok(const Item& it, const Tensor& image, size_t i) {
    if (s_.kappa <= 0.f) return true;
    NoGradScope ng;
    const std::vector<float> z = forward_images(model_, {Var(image)}, s_.raw_input).value().to_vector();
    const int t = labels_host_[i];
    float other = -INFINITY;
    for (int c = 0; c < k_; ++c)
      if (c != t) other = std::max(other, z[c]);
    (void)it;
    return s_.targeted ? z[t] - other >= s_.kappa : other - z[t] >= s_.kappa;
  }

  // Single 8-bit steps from the rounded image, for items whose success rounding lost.
  void refine(std::vector<Item>& its, const std::vector<size_t>& ids, std::vector<ItemResult>& out, int round) {
    std::vector<size_t> js;
    for (size_t j = 0; j < its.size(); ++j)
      if (its[j].needs_refine) {
        js.push_back(j);
        its[j].x = out[j].adversarial.clone();
        out[j].refined = true;
      }
    const float level = 1.f / 255.f;
    for (int step = 1; step <= s_.refine_steps && !js.empty(); ++step) {
      std::vector<Item*> act;
      std::vector<size_t> act_ids;
      for (size_t j : js) act.push_back(&its[j]), act_ids.push_back(ids[j]);
      // The cross-entropy's gradient (also for cw: its margin is flat where it is met).
      Eval e = evaluate(act, act_ids, true, false);
      for (size_t a = 0; a < act.size(); ++a) {
        sign_step(act[a]->x, e.grads[a], level);
        // Back into the ball before rounding: one level on every pixel is sqrt(n) levels of L2,
        // and snap only shortens changes that a projection has already bounded.
        if (s_.method != AttackMethod::Cw) project(*act[a]);
        Tensor q = snap(act[a]->x, act[a]->x0);
        act[a]->x.copy_from(q);
      }
      const std::vector<std::vector<float>> p = probs_of([&] {
        std::vector<Tensor> v;
        for (Item* it : act) v.push_back(it->x);
        return v;
      }());
      std::vector<size_t> still;
      for (size_t a = 0; a < act.size(); ++a) {
        const size_t j = js[a], i = ids[j];
        const StepRecord r = record(i, *act[a], out[j].steps + step, round, true, e.loss[a], e.ce[a], p[a],
                                    e.grad_norms[a]);
        out[j].trace.push_back(r);
        notify(i, r, act[a]->x, p[a]);
        out[j].adversarial = act[a]->x.clone();
        out[j].final_probs = p[a];
        const Norms n = perturbation_norms(act[a]->x, act[a]->x0);
        out[j].linf = n.linf, out[j].l2 = n.l2, out[j].l0 = n.l0;
        if (is_success(s_, p[a], labels_host_[i]) &&
            (s_.method != AttackMethod::Cw || margin_ok(*act[a], act[a]->x, i)))
          out[j].success_8bit = true;
        else
          still.push_back(j);
      }
      js = still;
    }
  }

  // Carlini-Wagner L2: Adam on w with x = (tanh(w) + 1) / 2, minimising ||x - x0||^2 + c * margin,
  // with a binary search over c per item; the result is the smallest successful perturbation.
  std::vector<ItemResult> run_cw(const std::vector<Tensor>& originals, const std::vector<size_t>& ids) {
    std::vector<ItemResult> out(ids.size());
    for (ItemResult& r : out) r.steps = s_.steps, r.best_run = s_.cw_search - 1;  // no success: the last round
    std::vector<float> c(ids.size(), s_.cw_c), lo(ids.size(), 0.f), hi(ids.size(), 1e10f);
    std::vector<bool> have_best(ids.size(), false);
    std::vector<float> best_l2(ids.size(), INFINITY);
    std::vector<Tensor> best_float(ids.size()), last_x(ids.size());
    int global_step = 0;
    for (int round = 0; round < s_.cw_search; ++round) {
      std::vector<Item> its(ids.size());
      std::vector<bool> round_success(ids.size(), false);
      for (size_t j = 0; j < ids.size(); ++j) {
        Item& it = its[j];
        it.x0 = originals[ids[j]];
        it.x = it.x0.clone();
        it.c = c[j];
        // w = atanh(2 x0 - 1), pulled slightly inside (-1, 1)
        std::vector<float> w = it.x0.to_vector();
        for (float& v : w) v = std::atanh((2.f * v - 1.f) * 0.999999f);
        it.m = Tensor::from_vector(it.x0.shape(), w).to(dev_);
        it.v = Tensor::zeros(it.x0.shape(), dev_);  // Adam's moments for w: first in v, second in mw[j]
      }
      std::vector<Tensor> mw(ids.size());
      for (size_t j = 0; j < ids.size(); ++j) mw[j] = Tensor::zeros(its[j].x0.shape(), dev_);
      for (int step = 0; step <= s_.steps; ++step, ++global_step) {
        std::vector<Item*> act;
        for (Item& it : its) act.push_back(&it);
        const bool last = step == s_.steps;
        Eval e = evaluate(act, ids, !last, true);
        for (size_t j = 0; j < ids.size(); ++j) {
          // The current image x = (tanh(w) + 1) / 2, for records and checks.
          Tensor x = Tensor::empty(its[j].m.shape(), dev_);
          unary(UnaryOp::Tanh, its[j].m, x);
          unary(UnaryOp::Affine, x, x, 0.5f, 0.5f);
          its[j].x = x;
          last_x[j] = x;
          const size_t i = ids[j];
          const StepRecord r = record(i, its[j], global_step, round, false, e.loss[j], e.ce[j], e.probs[j],
                                      e.grad_norms[j]);
          out[j].trace.push_back(r);
          notify(i, r, its[j].x, e.probs[j]);
          if (is_success(s_, e.probs[j], labels_host_[i]) && margin_ok(its[j], x, i)) {
            round_success[j] = true;
            if (r.l2 < best_l2[j]) {
              best_l2[j] = r.l2;
              best_float[j] = x.clone();
              have_best[j] = true;
              out[j].steps = step;  // updates in its round (the trace's step counts all rounds' rows)
              out[j].best_run = round;
            }
          }
          if (!last)  // Adam on the unbounded w: no clamp into the pixel range
            adam_step(its[j].m, e.grads[j], its[j].v, mw[j], s_.cw_lr, s_.beta1, s_.beta2, 1e-8f, ++its[j].t, false);
        }
      }
      for (size_t j = 0; j < ids.size(); ++j) {  // binary search on c
        if (round_success[j]) {
          hi[j] = std::min(hi[j], c[j]);
          c[j] = (lo[j] + hi[j]) / 2;
        } else {
          lo[j] = std::max(lo[j], c[j]);
          c[j] = hi[j] < 1e9f ? (lo[j] + hi[j]) / 2 : c[j] * 10;
        }
      }
    }
    // The result: the best successful image (or the last one), rounded and checked on the grid.
    std::vector<Item> fin(ids.size());
    std::vector<size_t> all;
    for (size_t j = 0; j < ids.size(); ++j) {
      fin[j].x0 = originals[ids[j]];
      fin[j].x = have_best[j] ? best_float[j] : last_x[j];
      fin[j].float_success = have_best[j];
      fin[j].steps = out[j].steps;
      all.push_back(j);
    }
    finish(fin, ids, all, out);
    refine(fin, ids, out, s_.cw_search - 1);
    return out;
  }

  Model& model_;
  const std::vector<AttackItem>& items_;
  const AttackSettings& s_;
  const StepObserver& observer_;
  Clock::time_point start_;
  Device dev_;
  int64_t k_ = 0;
  std::vector<int> labels_host_;
  std::vector<bool> original_passes_;
  std::vector<std::vector<float>> seen_;  // seen_pixels, per image
  std::vector<bool> seen_done_;
  float grid_eps_ = 0;
};

}  // namespace

std::vector<ItemResult> run_attack(Model& model, const std::vector<AttackItem>& items, const AttackSettings& settings,
                                   const StepObserver& observer) {
  validate(settings);
  TRICK_CHECK(!items.empty(), "attack: no images");
  for (const Var* p : model.parameters())
    TRICK_CHECK(!p->requires_grad(), "attack: the model's parameters must be frozen (set_requires_grad(false))");
  for (size_t i = 0; i < items.size(); ++i) {
    const Tensor& im = items[i].image;
    TRICK_CHECK(im.ndim() == 3 && im.dim(2) == model.input_channels(), "attack: image ", i, " has shape ",
                im.shape().str(), ", the model takes ", model.input_channels(), " channels");
    TRICK_CHECK(items[i].label >= 0 && items[i].label < model.classes(), "attack: class ", items[i].label,
                " of image ", i, " is not in [0, ", model.classes(), ")");
  }
  // The weights stay as they are for the whole attack: the CPU engines pack each layer's once.
  FrozenConvWeights frozen;
  Attack a(model, items, settings, observer);
  return a.run();
}

std::vector<std::vector<float>> predict(Model& model, const std::vector<Tensor>& images, bool raw_input) {
  NoGradScope no_grad;
  const Device dev = model.device();
  std::vector<Var> vs;
  for (const Tensor& t : images) vs.push_back(Var(t.contiguous().to(dev)));
  const std::vector<float> all = softmax(forward_images(model, vs, raw_input)).value().to_vector();
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < images.size(); ++i) out.push_back(row(all, model.classes(), i));
  return out;
}

}  // namespace trick
