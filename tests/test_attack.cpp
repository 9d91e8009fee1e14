// The attack on a small model: every method reaches a reachable target, the projections hold
// on every step, and the 8-bit result saved as PNG and read back classifies as reported.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <unistd.h>

#include "attack/attack.h"
#include "attack/losses.h"
#include "kernels/attack.h"
#include "kernels/pointwise.h"
#include "kernels/reduce.h"
#include "layers/module.h"
#include "layers/ops.h"
#include "models/preprocess.h"
#include "tensor/random.h"
#include "tools/lib/image.h"
#include "tests/op_check.h"
#include "tests/tiny_net.h"

namespace test_attack {

using namespace trick;
using trick_test::TinyNet;
using trick_test::grid_image;

namespace {

// The second most probable class: a target the attack can reach.
int runner_up(Model& m, const Tensor& image) {
  const std::vector<float> p = predict(m, {image}, false)[0];
  int best = 0, second = -1;
  for (int i = 1; i < 4; ++i)
    if (p[i] > p[best]) best = i;
  for (int i = 0; i < 4; ++i)
    if (i != best && (second < 0 || p[i] > p[second])) second = i;
  return second;
}

struct Bounds {
  float max_linf = 0, max_l2 = 0, lo = 1, hi = 0;
  int steps = 0;
};

}  // namespace

TEST_CASE("attack: every method reaches a reachable target, projections hold on every step") {
  TinyNet net(5);
  Rng rng(7);
  const Tensor image = grid_image(20, 24, rng);  // not the model's size: resize + crop are in the graph
  const int target = runner_up(net, image);
  struct Case {
    const char* method;
    Ball ball;
    float eps, step;
    int steps;
  };
  const Case cases[] = {{"descent", Ball::Linf, 24, 2, 200}, {"fgsm", Ball::Linf, 24, 24, 1},
                        {"bim", Ball::Linf, 24, 1, 200},     {"pgd", Ball::Linf, 24, 1, 200},
                        {"pgd", Ball::L2, 300, 20, 200},     {"mifgsm", Ball::Linf, 24, 1, 200},
                        {"adam", Ball::Linf, 24, 1, 200},    {"cw", Ball::Linf, 0, 1, 60}};
  for (const Case& c : cases) {
    const std::string what = std::string(c.method) + " " + ball_name(c.ball);
    CAPTURE(what);
    AttackSettings s;
    s.method = parse_attack_method(c.method);
    s.ball = c.ball;
    s.eps = c.eps / 255.f;
    s.step = c.step / 255.f;
    s.steps = c.steps;
    s.confidence = 0.6f;
    s.random_start = s.method == AttackMethod::Pgd;
    s.cw_lr = 0.001f;
    s.cw_search = 3;
    s.seed = 3;
    Bounds b;
    const std::vector<float> x0 = image.to_vector();
    auto observe = [&](const StepView& v) {
      const std::vector<float> x = v.image->to_vector();
      double l2 = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const float d = std::fabs(x[i] - x0[i]);
        b.max_linf = std::max(b.max_linf, d);
        l2 += static_cast<double>(d) * d;
        b.lo = std::min(b.lo, x[i]);
        b.hi = std::max(b.hi, x[i]);
      }
      b.max_l2 = std::max(b.max_l2, static_cast<float>(std::sqrt(l2)));
      ++b.steps;
      // The record's norms describe this same image (in 8-bit units).
      float linf = 0;
      for (size_t i = 0; i < x.size(); ++i) linf = std::max(linf, std::fabs(x[i] - x0[i]) * 255.f);
      REQUIRE(v.record->linf == doctest::Approx(linf));
      // ... and the probabilities are this image's (cw's last step of a round once paired the
      // image after the round's last update with the probabilities of the image before it).
      const std::vector<float> p = predict(net, {*v.image}, false)[0];
      for (size_t k = 0; k < p.size(); ++k) REQUIRE(std::fabs(p[k] - (*v.probs)[k]) <= 1e-5f);
    };
    const std::vector<ItemResult> r = run_attack(net, {AttackItem{image, target}}, s, observe);
    REQUIRE(r.size() == 1);
    CHECK(b.steps >= 1);
    CHECK(b.lo >= 0.f);
    CHECK(b.hi <= 1.f);
    if (s.method != AttackMethod::Cw) {
      if (c.ball == Ball::Linf) CHECK(b.max_linf <= s.eps + 1e-6f);
      if (c.ball == Ball::L2) CHECK(b.max_l2 <= s.eps * (1 + 1e-5f));
    }
    INFO("target prob " << r[0].trace.back().label_prob << " after " << r[0].steps << " steps");
    CHECK(r[0].success_8bit);
    CHECK(r[0].steps >= 1);                            // it had to work for it
    CHECK(r[0].original_probs[target] < s.confidence);
    // The final 8-bit image is inside the ball in 8-bit units, and on the grid.
    const std::vector<float> adv = r[0].adversarial.to_vector();
    for (size_t i = 0; i < adv.size(); ++i) {
      REQUIRE(std::fabs(adv[i] * 255.f - std::round(adv[i] * 255.f)) < 1e-3f);
      if (s.method != AttackMethod::Cw && c.ball == Ball::Linf)
        REQUIRE(std::round(std::fabs(adv[i] - x0[i]) * 255.f) <= c.eps);
    }
    if (s.method != AttackMethod::Cw && c.ball == Ball::L2) CHECK(r[0].l2 <= c.eps * (1 + 1e-5f));
    CHECK(r[0].final_probs[target] == *std::max_element(r[0].final_probs.begin(), r[0].final_probs.end()));
  }
}

namespace {

// The attack's gradient, recomputed outside it: the objective (cross-entropy toward the target,
// or its negative away from the true class) of the batch `xs`, through the model's resize +
// crop, differentiated with respect to each image. The same ops on the same batch as the
// attack's own step, so the same floats.
// The model's logits for the images `xs` (each (H, W, C), through the model's transform), with
// `vs` the leaves to differentiate against; `labels` as the float tensor the losses take.
Var batch_logits(Model& m, const std::vector<Tensor>& xs, std::vector<Var>& vs) {
  std::vector<Var> inputs;
  for (const Tensor& x : xs) {
    vs.push_back(Var(x.clone(), true));
    const Shape s = x.shape();
    inputs.push_back(apply_preprocess(reshape(vs.back(), Shape{1, s[0], s[1], s[2]}), m.preprocess(),
                                      m.input_height(), m.input_width()));
  }
  return m.forward(concat_batch(inputs));
}
Tensor label_tensor(const std::vector<int>& labels) {
  std::vector<float> lab(labels.begin(), labels.end());
  return Tensor::from_vector(Shape{static_cast<int64_t>(lab.size())}, lab);
}
std::vector<std::vector<float>> grads_of(const std::vector<Var>& vs) {
  std::vector<std::vector<float>> out;
  for (const Var& v : vs) out.push_back(v.grad().to_vector());
  return out;
}

std::vector<std::vector<float>> objective_grads(Model& m, const std::vector<Tensor>& xs, const std::vector<int>& labels,
                                                bool targeted) {
  std::vector<Var> vs;
  Var ce = cross_entropy(batch_logits(m, xs, vs), label_tensor(labels));
  sum(targeted ? ce : affine(ce, -1.f, 0.f)).backward();
  return grads_of(vs);
}

float sgn(float v) { return v > 0.f ? 1.f : (v < 0.f ? -1.f : 0.f); }

// Each image toward its second most probable class.
std::vector<AttackItem> toward_runner_up(Model& m, const std::vector<Tensor>& images) {
  std::vector<AttackItem> items;
  for (const Tensor& im : images) items.push_back({im, runner_up(m, im)});
  return items;
}

}  // namespace

TEST_CASE("attack: every method's steps are its paper's update, per image of a batch") {
  // Two images of different sizes in one batch, three steps, a confidence no image reaches:
  // every step of every image is rebuilt here from the recorded image before it, with the
  // gradient recomputed and the update written out from the papers (descent: the article's
  // x -= lr g with lr fixed by the first step; FGSM / BIM / PGD-Linf: x -= a sign(g), clipped to
  // the eps-ball and [0, 1]; PGD-L2: x -= a g / ||g||_2, then the ball; MI-FGSM: m = mu m +
  // g / ||g||_1 with the L1 norm of that image's gradient alone, x -= a sign(m); Adam: bias-
  // corrected moments). A norm taken over the batch, a flipped sign or a missing projection
  // moves some pixel by a whole step.
  TinyNet net(21);
  Rng rng(22);
  const std::vector<Tensor> images = {grid_image(20, 23, rng), grid_image(17, 18, rng)};
  const std::vector<AttackItem> items = toward_runner_up(net, images);
  struct Case {
    const char* method;
    Ball ball;
    bool targeted, random_start;
  };
  const Case cases[] = {{"descent", Ball::Linf, true, false}, {"fgsm", Ball::Linf, true, false},
                        {"bim", Ball::Linf, true, false},     {"bim", Ball::Linf, false, false},
                        {"pgd", Ball::Linf, true, true},      {"pgd", Ball::L2, true, true},
                        {"pgd", Ball::L2, false, false},      {"mifgsm", Ball::Linf, true, false},
                        {"mifgsm", Ball::Linf, false, false}, {"adam", Ball::Linf, true, false}};
  for (const Case& c : cases) {
    const std::string what = std::string(c.method) + " " + ball_name(c.ball) + (c.targeted ? "" : " untargeted");
    CAPTURE(what);
    AttackSettings s;
    s.method = parse_attack_method(c.method);
    s.ball = c.ball;
    s.targeted = c.targeted;
    s.eps = (c.ball == Ball::L2 ? 40.f : 5.f) / 255.f;  // three steps of 2 reach past 5
    s.step = (c.ball == Ball::L2 ? 15.f : 2.f) / 255.f;
    s.steps = s.method == AttackMethod::Fgsm ? 1 : 3;
    s.confidence = 1.f;  // no targeted image stops early
    s.momentum = 0.7f;
    s.random_start = c.random_start;
    s.refine_steps = 0;
    s.seed = 5;
    std::vector<AttackItem> batch = items;
    if (!c.targeted)  // away from each image's own prediction
      for (size_t i = 0; i < batch.size(); ++i) {
        const std::vector<float> p = predict(net, {batch[i].image}, false)[0];
        batch[i].label = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
      }
    std::map<std::pair<int, int>, Tensor> seen;  // (step, image) -> the image at that step
    auto observe = [&](const StepView& v) { seen[{v.record->step, v.item}] = v.image->clone(); };
    run_attack(net, batch, s, observe);
    REQUIRE(seen.count({0, 0}));
    REQUIRE(seen.count({0, 1}));
    for (int i = 0; i < 2; ++i) {  // the start: the original, or a random point of the ball
      const std::vector<float> x = seen[{0, i}].to_vector(), x0 = batch[i].image.to_vector();
      double l2 = 0, linf = 0;
      for (size_t k = 0; k < x.size(); ++k) {
        l2 += (x[k] - x0[k]) * static_cast<double>(x[k] - x0[k]);
        linf = std::max<double>(linf, std::fabs(x[k] - x0[k]));
      }
      if (!c.random_start) {
        CHECK(l2 == 0.0);
      } else {
        CHECK(l2 > 0.0);
        CHECK((c.ball == Ball::Linf ? linf : std::sqrt(l2)) <= s.eps * (1 + 1e-5));
      }
    }
    std::vector<std::vector<double>> m(2), v(2);  // mifgsm momentum, adam moments
    std::vector<float> lr(2, 0.f);
    int updates = 0;
    for (int t = 0; t < s.steps; ++t) {
      std::vector<int> batch_t, labels;
      std::vector<Tensor> xs;
      for (int i = 0; i < 2; ++i)
        if (seen.count({t, i})) batch_t.push_back(i), labels.push_back(batch[i].label), xs.push_back(seen[{t, i}]);
      if (batch_t.empty()) break;
      const std::vector<std::vector<float>> g = objective_grads(net, xs, labels, c.targeted);
      for (size_t a = 0; a < batch_t.size(); ++a) {
        const int i = batch_t[a];
        if (!seen.count({t + 1, i})) continue;  // it stopped here
        const std::vector<float> x = xs[a].to_vector(), x0 = batch[i].image.to_vector(), got = seen[{t + 1, i}].to_vector();
        const std::vector<float>& gi = g[a];
        const size_t n = x.size();
        std::vector<double> want(n);
        double l1 = 0, l2 = 0, gmax = 0;
        for (float e : gi) l1 += std::fabs(e), l2 += static_cast<double>(e) * e, gmax = std::max<double>(gmax, std::fabs(e));
        if (m[i].empty()) m[i].assign(n, 0.0), v[i].assign(n, 0.0);
        for (size_t k = 0; k < n; ++k) {
          double y = x[k];
          switch (s.method) {
            case AttackMethod::Descent:
              if (lr[i] == 0.f) lr[i] = static_cast<float>(s.step / gmax);
              y -= lr[i] * gi[k];
              break;
            case AttackMethod::Fgsm:
            case AttackMethod::Bim:
              y -= s.step * sgn(gi[k]);
              break;
            case AttackMethod::Pgd:
              y -= c.ball == Ball::Linf ? s.step * sgn(gi[k]) : s.step * gi[k] / std::sqrt(l2);
              break;
            case AttackMethod::MiFgsm:
              m[i][k] = s.momentum * m[i][k] + gi[k] / l1;
              y -= s.step * sgn(static_cast<float>(m[i][k]));
              break;
            case AttackMethod::Adam: {
              m[i][k] = s.beta1 * m[i][k] + (1 - s.beta1) * gi[k];
              v[i][k] = s.beta2 * v[i][k] + (1 - s.beta2) * gi[k] * static_cast<double>(gi[k]);
              const double mh = m[i][k] / (1 - std::pow(s.beta1, t + 1)), vh = v[i][k] / (1 - std::pow(s.beta2, t + 1));
              y -= s.step * mh / (std::sqrt(vh) + 1e-8);
              break;
            }
            case AttackMethod::Cw:
              break;
          }
          want[k] = y;  // Linf: into [0, 1] and the ball; L2: below, after the whole step
          if (c.ball == Ball::Linf)
            want[k] = std::min(std::min(1.0, x0[k] + static_cast<double>(s.eps)),
                               std::max(std::max(0.0, x0[k] - static_cast<double>(s.eps)), y));
        }
        if (c.ball == Ball::L2) {  // onto the ball: the whole change scaled, then into [0, 1]
          double d2 = 0;
          for (size_t k = 0; k < n; ++k) d2 += (want[k] - x0[k]) * (want[k] - x0[k]);
          const double f = std::sqrt(d2) > s.eps ? s.eps / std::sqrt(d2) : 1.0;
          for (size_t k = 0; k < n; ++k) want[k] = std::min(1.0, std::max(0.0, x0[k] + (want[k] - x0[k]) * f));
        }
        int bad = 0;
        for (size_t k = 0; k < n; ++k)
          if (!(std::fabs(got[k] - want[k]) <= 2e-6)) {
            if (bad++ < 3) MESSAGE("image " << i << " step " << t + 1 << " [" << k << "]: got " << got[k] << " want " << want[k]);
          }
        CHECK_MESSAGE(bad == 0, bad << " of " << n << " values differ");
        ++updates;
      }
    }
    CHECK(updates >= (s.method == AttackMethod::Fgsm ? 2 : 4));  // both images, every step (untargeted: most)
  }
}

namespace {

// cw's objective ||x - x0||^2 + c * margin(z(x)) per image of the batch `xs`, differentiated
// with respect to each image x (not w): the chain through x = (tanh w + 1) / 2 is the test's.
std::vector<std::vector<float>> cw_grads(Model& m, const std::vector<Tensor>& xs, const std::vector<Tensor>& x0s,
                                         const std::vector<int>& labels, const std::vector<float>& cs, float kappa) {
  std::vector<Var> vs, dists;
  Var margin = margin_loss(batch_logits(m, xs, vs), label_tensor(labels), kappa, true);
  for (size_t j = 0; j < xs.size(); ++j) {
    Var d = sub(vs[j], Var(x0s[j]));
    dists.push_back(reshape(sum(mul(d, d)), Shape{1}));
  }
  const Tensor c = Tensor::from_vector(Shape{static_cast<int64_t>(cs.size())}, cs);
  sum(add(concat_batch(dists), mul(margin, Var(c)))).backward();
  return grads_of(vs);
}

}  // namespace

TEST_CASE("attack: cw's steps are Adam on w, its c follows the binary search, it keeps the smallest success") {
  // Carlini-Wagner L2 on two images of a batch, rebuilt from the paper and nn_robust_attacks:
  // x = (tanh w + 1) / 2 from w0 = atanh(2 x0 - 1); each round runs Adam (bias-corrected, its
  // moments and step count new each round) on w for ||x - x0||^2 + c * max(max_{j != t} z_j -
  // z_t, -kappa); after a round c is halved toward the last failure if some step succeeded
  // (hi = c), else raised (lo = c; times 10 while no success bounds it). The result is the
  // successful step with the smallest L2 over all rounds.
  TinyNet net(21);
  Rng rng(23);
  const std::vector<Tensor> images = {grid_image(20, 23, rng), grid_image(17, 18, rng)};
  const std::vector<AttackItem> items = toward_runner_up(net, images);
  AttackSettings s;
  s.method = AttackMethod::Cw;
  s.steps = 6;
  s.cw_search = 5;
  // Small steps and a small c (the runner-up is close: larger ones succeed in every round):
  // some rounds fail and c grows, some succeed and c shrinks, and image 0's smallest success
  // is not its last one.
  s.cw_c = 1e-2f;
  s.cw_lr = 0.001f;
  s.refine_steps = 0;
  struct Seen {
    StepRecord record;
    Tensor image;
  };
  std::map<std::pair<int, int>, Seen> seen;  // (image, global step) -> what the observer saw
  auto observe = [&](const StepView& v) {
    if (!v.record->refine) seen[{v.item, v.record->step}] = Seen{*v.record, v.image->clone()};
  };
  const std::vector<ItemResult> res = run_attack(net, items, s, observe);
  REQUIRE(res.size() == 2);
  const int per_round = s.steps + 1;  // steps 0..steps: the last one is evaluated, not updated
  int rebuilt = 0, successes = 0, failures = 0, discriminating = 0;
  for (int i = 0; i < 2; ++i) {
    CAPTURE(i);
    const std::vector<float> x0 = images[i].to_vector();
    const size_t n = x0.size();
    float c = s.cw_c, lo = 0.f, hi = 1e10f;
    int best_step = -1, last_step = -1;
    float best_l2 = INFINITY;
    for (int round = 0; round < s.cw_search; ++round) {
      CAPTURE(round);
      std::vector<double> w(n), m(n, 0.0), v(n, 0.0);
      for (size_t k = 0; k < n; ++k) w[k] = std::atanh((2.f * x0[k] - 1.f) * 0.999999f);
      bool round_success = false;
      for (int t = 0; t <= s.steps; ++t) {
        const int g = round * per_round + t;
        REQUIRE(seen.count({i, g}));
        const Seen& at = seen[{i, g}];
        CHECK(at.record.round == round);
        CHECK(at.record.cw_c == c);  // the binary search's constant, exactly
        // The image is (tanh w + 1) / 2 of the w rebuilt here.
        const std::vector<float> x = at.image.to_vector();
        double worst = 0;
        for (size_t k = 0; k < n; ++k) worst = std::max(worst, std::fabs(x[k] - (std::tanh(w[k]) + 1) / 2));
        CHECK_MESSAGE(worst <= 2e-6, "step " << t << ": the image is " << worst << " from (tanh w + 1) / 2");
        ++rebuilt;
        if (at.record.top1.index == items[i].label) {  // kappa 0: success is the target on top
          round_success = true;
          last_step = g;
          if (at.record.l2 < best_l2) best_l2 = at.record.l2, best_step = g;
        }
        if (t == s.steps) break;
        // Adam on w with the gradient through x = (tanh w + 1) / 2.
        const std::vector<float> gx = cw_grads(net, {at.image}, {images[i]}, {items[i].label}, {c}, s.kappa)[0];
        for (size_t k = 0; k < n; ++k) {
          const double th = std::tanh(w[k]), gw = gx[k] * (1 - th * th) / 2;
          m[k] = s.beta1 * m[k] + (1 - s.beta1) * gw;
          v[k] = s.beta2 * v[k] + (1 - s.beta2) * gw * gw;
          const double mh = m[k] / (1 - std::pow(s.beta1, t + 1)), vh = v[k] / (1 - std::pow(s.beta2, t + 1));
          w[k] -= s.cw_lr * mh / (std::sqrt(vh) + 1e-8);
        }
      }
      (round_success ? successes : failures) += 1;
      if (round_success) {
        hi = std::min(hi, c);
        c = (lo + hi) / 2;
      } else {
        lo = std::max(lo, c);
        c = hi < 1e9f ? (lo + hi) / 2 : c * 10;
      }
    }
    CHECK(!seen.count({i, s.cw_search * per_round}));  // nothing past the last round
    // The result is the smallest successful image, rounded to 8 bits.
    REQUIRE(best_step >= 0);
    discriminating += best_step != last_step;
    CHECK(res[i].success_float);
    CHECK(res[i].steps == best_step % per_round);  // updates in its round
    CHECK(res[i].best_run == best_step / per_round);
    CHECK(res[i].adversarial_float.to_vector() == seen[{i, best_step}].image.to_vector());
    std::vector<float> want = seen[{i, best_step}].image.to_vector();
    for (float& f : want) f = std::round(f * 255.f) / 255.f;
    const std::vector<float> got = res[i].adversarial.to_vector();
    for (size_t k = 0; k < n; ++k) REQUIRE(std::fabs(got[k] - want[k]) <= 1e-6f);
  }
  CHECK(rebuilt == 2 * s.cw_search * per_round);
  CHECK(discriminating >= 1);  // keeping the last success instead of the smallest would fail here
  // Both branches of the search ran: rounds that failed (c raised) and rounds that succeeded.
  CHECK(successes >= 2);
  CHECK(failures >= 2);
}

TEST_CASE("attack: the 8-bit refinement stays inside the L2 ball") {
  // Steps of a quarter level toward a confidence the float image then just passes: rounding
  // to 8 bits loses some of those successes (these 5), so the refinement's 8-bit steps
  // run. One such step on every pixel is sqrt(n) levels of L2 (38 here), and these budgets are
  // just what the success needs, so each step must be projected back into the ball (without
  // the projection: 115 to 127 levels in balls of 100 and 120).
  TinyNet net(5);
  Rng rng(7);
  const Tensor image = grid_image(20, 24, rng);
  const int target = runner_up(net, image);
  int refined = 0;
  // (budget, confidence): the runs that refine, of a sweep of 16 (fewer: faster under ASan).
  const std::pair<float, float> runs[] = {{100.f, 0.45f}, {100.f, 0.46f}, {120.f, 0.45f}, {120.f, 0.46f}, {120.f, 0.5f}};
  for (const auto& run : runs) {
    const float eps = run.first, confidence = run.second;
    CAPTURE(eps);
    CAPTURE(confidence);
    AttackSettings s;
    s.method = AttackMethod::Pgd;
    s.ball = Ball::L2;
    s.eps = eps / 255.f;
    s.step = 0.25f / 255.f;  // small steps: the float success is just past the boundary
    s.steps = 600;  // they succeed in 358 to 413
    s.confidence = confidence;  // and the top-1: reached by small steps, just past it
    s.refine_steps = 10;
    float max_l2 = 0;
    auto observe = [&](const StepView& v) { max_l2 = std::max(max_l2, v.record->l2); };
    const std::vector<ItemResult> r = run_attack(net, {AttackItem{image, target}}, s, observe);
    CHECK(max_l2 <= eps * (1 + 1e-5f));
    CHECK(r[0].l2 <= eps * (1 + 1e-5f));
    refined += r[0].refined;
  }
  CHECK(refined >= 1);  // the path under test ran
  MESSAGE(refined << " of 5 runs refined");
}

TEST_CASE("attack: the saved PNG, read back, classifies exactly as reported") {
  TinyNet net(9);
  Rng rng(8);
  const Tensor image = grid_image(18, 18, rng);
  AttackSettings s;
  s.method = AttackMethod::Pgd;
  s.eps = 24.f / 255.f;
  s.step = 1.f / 255.f;
  s.steps = 100;
  s.confidence = 0.6f;
  const int target = runner_up(net, image);
  const std::vector<ItemResult> r = run_attack(net, {AttackItem{image, target}}, s);
  REQUIRE(r[0].success_8bit);
  char path[] = "/tmp/trick_attack_test_XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  const std::string png = std::string(path) + ".png";
  save_png(png, r[0].adversarial);
  const Tensor back = load_image(png);
  std::remove(png.c_str());
  std::remove(path);
  CHECK(back.to_vector() == r[0].adversarial.to_vector());
  const std::vector<float> p = predict(net, {back}, false)[0];
  CHECK(p == r[0].final_probs);
  CHECK(p[target] >= s.confidence);
}

TEST_CASE("attack: a batch stops each image independently, untargeted moves away from the true class") {
  TinyNet net(11);
  Rng rng(12);
  std::vector<AttackItem> items;
  for (int i = 0; i < 3; ++i) {
    Tensor im = grid_image(16 + 2 * i, 17, rng);
    items.push_back({im, runner_up(net, im)});
  }
  AttackSettings s;
  s.method = AttackMethod::Bim;
  s.eps = 32.f / 255.f;
  s.step = 1.f / 255.f;
  s.steps = 150;
  s.confidence = 0.5f;
  const std::vector<ItemResult> r = run_attack(net, items, s);
  for (size_t i = 0; i < r.size(); ++i) {
    CAPTURE(i);
    CHECK(r[i].success_8bit);
    // Stopped at its own step: the trace ends at the step where it first succeeded.
    CHECK(r[i].trace.back().step == r[i].steps);
    CHECK(r[i].trace.back().label_prob >= 0.5f);
  }
  // Untargeted: the label is the true class (here the model's own top-1).
  const std::vector<float> p0 = predict(net, {items[0].image}, false)[0];
  const int top = static_cast<int>(std::max_element(p0.begin(), p0.end()) - p0.begin());
  s.targeted = false;
  const std::vector<ItemResult> u = run_attack(net, {AttackItem{items[0].image, top}}, s);
  CHECK(u[0].success_8bit);
  const std::vector<float>& pf = u[0].final_probs;
  CHECK(std::max_element(pf.begin(), pf.end()) - pf.begin() != top);
}

TEST_CASE("attack: runs are reproducible with a seed, settings out of range are refused by name") {
  TinyNet net(13);
  Rng rng(14);
  const Tensor image = grid_image(16, 16, rng);
  AttackSettings s;
  s.method = AttackMethod::Pgd;
  s.random_start = true;
  s.restarts = 2;
  s.steps = 20;
  s.seed = 99;
  const int t = runner_up(net, image);
  const auto a = run_attack(net, {AttackItem{image, t}}, s);
  const auto b = run_attack(net, {AttackItem{image, t}}, s);
  CHECK(a[0].adversarial.to_vector() == b[0].adversarial.to_vector());
  AttackSettings bad = s;
  bad.eps = -1.f;
  CHECK_THROWS_WITH_AS(validate(bad), doctest::Contains("--eps"), Error);
  bad = s;
  bad.steps = 0;
  CHECK_THROWS_WITH_AS(validate(bad), doctest::Contains("--steps"), Error);
  CHECK_THROWS_WITH_AS(parse_attack_method("deepfool"), doctest::Contains("known: descent, fgsm"), Error);
  bad = s;
  bad.random_start = false;  // restarts of a deterministic run would repeat it exactly
  CHECK_THROWS_WITH_AS(validate(bad), doctest::Contains("--restarts 2 needs a random start"), Error);
}

TEST_CASE("attack: restarts keep the better run: 8-bit success, then float success, then the target's probability") {
  // The same seed with 1, 2, 3, 4 restarts: run r is the same in each (its start comes from
  // (seed, image, r)), so the result with n restarts is the better of the result with n - 1
  // and run n - 1 alone. Unreachable confidence: no run succeeds, every run runs all its
  // steps, and the rule comes down to the target's probability on the saved 8-bit image.
  TinyNet net(13);
  Rng rng(17);
  const Tensor image = grid_image(16, 16, rng);
  const int target = runner_up(net, image);
  AttackSettings s;
  s.method = AttackMethod::Pgd;
  s.random_start = true;
  s.eps = 6.f / 255.f;
  s.steps = 3;
  s.confidence = 1.f;
  s.seed = 7;
  std::vector<ItemResult> r;
  for (int n = 1; n <= 4; ++n) {
    s.restarts = n;
    r.push_back(run_attack(net, {AttackItem{image, target}}, s)[0]);
  }
  int later_won = 0;
  for (int n = 1; n <= 4; ++n) {
    CAPTURE(n);
    const ItemResult& now = r[n - 1];
    CHECK(!now.success_float);
    CHECK(!now.success_8bit);
    REQUIRE(now.trace.size() == static_cast<size_t>(n * (s.steps + 1)));  // every run, every step, in order
    for (size_t k = 0; k < now.trace.size(); ++k) CHECK(now.trace[k].round == static_cast<int>(k) / (s.steps + 1));
    if (n == 1) {
      CHECK(now.best_run == 0);
      continue;
    }
    const ItemResult& before = r[n - 2];
    for (size_t k = 0; k < before.trace.size(); ++k)  // the earlier runs are repeated exactly
      CHECK(now.trace[k].label_prob == before.trace[k].label_prob);
    REQUIRE((now.best_run == before.best_run || now.best_run == n - 1));
    if (now.best_run == before.best_run) {  // run n - 1 was not better: the result is unchanged
      CHECK(now.adversarial.to_vector() == before.adversarial.to_vector());
      CHECK(now.final_probs == before.final_probs);
    } else {  // run n - 1 won: its saved image gives the target more probability
      ++later_won;
      CHECK(now.final_probs[target] > before.final_probs[target]);
      CHECK(now.adversarial.to_vector() != before.adversarial.to_vector());
    }
    // Never worse than before, whichever run won.
    CHECK(now.final_probs[target] >= before.final_probs[target]);
  }
  CHECK(later_won >= 1);  // the test saw a later restart win
  // A run that succeeds ends the restarts: with a reachable confidence, run 0 succeeds and
  // no second run starts.
  s.confidence = 0.5f;
  s.steps = 100;
  s.eps = 24.f / 255.f;
  s.restarts = 3;
  const ItemResult one = run_attack(net, {AttackItem{image, target}}, s)[0];
  REQUIRE(one.success_8bit);
  CHECK(one.best_run == 0);
  for (const StepRecord& t : one.trace) CHECK(t.round == 0);
}

TEST_CASE("attack: an original that already passes is returned unchanged, even with a random start") {
  TinyNet net(13);
  Rng rng(14);
  const Tensor image = grid_image(16, 16, rng);
  const std::vector<float> p = predict(net, {image}, false)[0];
  const int top = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
  AttackSettings s;
  s.method = AttackMethod::Pgd;
  s.random_start = true;
  s.restarts = 3;
  s.confidence = p[top] * 0.99f;  // the original passes as it is
  s.seed = 1;
  const ItemResult r = run_attack(net, {AttackItem{image, top}}, s)[0];
  CHECK(r.success_8bit);
  CHECK(r.steps == 0);
  CHECK(r.l0 == 0);
  CHECK(r.trace.size() == 1);
  CHECK(r.adversarial.to_vector() == image.to_vector());
  // Untargeted away from a class the model does not predict: already passes too.
  s.targeted = false;
  const ItemResult u = run_attack(net, {AttackItem{image, (top + 1) % 4}}, s)[0];
  CHECK(u.success_8bit);
  CHECK(u.l0 == 0);
}

TEST_CASE("attack: a random start leaves the pixels the model never sees unchanged") {
  // TinyNet resizes the shorter side to 18 and crops 16: of a 20x40 image, the columns far
  // from the centre feed nothing. Noise there would never be undone and would be saved as
  // part of the change.
  TinyNet net(13);
  Rng rng(15);
  const Tensor image = grid_image(20, 40, rng);
  // Which pixels reach the model: those with a gradient from the transformed image.
  Var x(image.clone(), true);
  sum(apply_preprocess(reshape(x, Shape{1, 20, 40, 3}), net.preprocess(), 16, 16)).backward();
  const std::vector<float> g = x.grad().to_vector(), x0 = image.to_vector();
  int unseen = 0;
  for (float v : g) unseen += v == 0.f;
  REQUIRE(unseen > 20 * 40 * 3 / 4);  // most of the width is cropped away
  for (Ball ball : {Ball::Linf, Ball::L2}) {
    CAPTURE(ball_name(ball));
    AttackSettings s;
    s.method = AttackMethod::Pgd;
    s.ball = ball;
    s.eps = (ball == Ball::Linf ? 8.f : 60.f) / 255.f;
    s.step = (ball == Ball::Linf ? 1.f : 10.f) / 255.f;
    s.random_start = true;
    s.steps = 3;
    s.confidence = 1.f;
    s.seed = 4;
    std::vector<float> start;
    const ItemResult r = run_attack(net, {AttackItem{image, runner_up(net, image)}}, s, [&](const StepView& v) {
      if (v.record->step == 0) start = v.image->to_vector();
    })[0];
    REQUIRE(start.size() == x0.size());
    const std::vector<float> adv = r.adversarial.to_vector();
    int moved_seen = 0, moved_unseen = 0;
    for (size_t k = 0; k < x0.size(); ++k) {
      const bool moved = start[k] != x0[k] || adv[k] != x0[k];
      (g[k] > 0.f ? moved_seen : moved_unseen) += moved;
    }
    CHECK(moved_unseen == 0);
    CHECK(moved_seen > 0);
  }
}

TEST_CASE("attack: an image's random starts depend on the seed, the image and the restart, not the batch") {
  TinyNet net(13);
  Rng rng(14);
  const Tensor a = grid_image(16, 16, rng), b = grid_image(18, 17, rng);
  AttackSettings s;
  s.method = AttackMethod::Pgd;
  s.random_start = true;
  s.restarts = 2;
  s.steps = 2;
  s.confidence = 1.f;  // nothing succeeds: both restarts run
  s.seed = 99;
  // (round, image) -> the image at step 0 of that round: the random start.
  auto starts = [&](const std::vector<AttackItem>& items, uint64_t seed) {
    std::map<std::pair<int, int>, std::vector<float>> out;
    AttackSettings t = s;
    t.seed = seed;
    run_attack(net, items, t, [&](const StepView& v) {
      if (v.record->step == 0) out[{v.record->round, v.item}] = v.image->to_vector();
    });
    return out;
  };
  auto alone = starts({AttackItem{a, 1}}, 99);
  auto pair = starts({AttackItem{a, 1}, AttackItem{b, 2}}, 99);
  auto other_seed = starts({AttackItem{a, 1}}, 100);
  REQUIRE(alone.size() == 2);
  REQUIRE(pair.size() == 4);
  CHECK(alone[{0, 0}] == pair[{0, 0}]);  // the same with or without b in the batch
  CHECK(alone[{1, 0}] == pair[{1, 0}]);
  CHECK(alone[{0, 0}] != alone[{1, 0}]);  // each restart starts somewhere else
  CHECK(alone[{0, 0}] != other_seed[{0, 0}]);
  // Item 1's start is drawn from its own stream: not item 0's numbers at a smaller size.
  const std::vector<float>& s0 = pair[{0, 0}];
  const std::vector<float>& s1 = pair[{0, 1}];
  const std::vector<float> a0 = a.to_vector(), b0 = b.to_vector();
  CHECK(s0[0] - a0[0] != s1[0] - b0[0]);
}

TEST_CASE("margin_loss (cw): forward and gradient against the double reference") {
  // Carlini-Wagner's f: max(max_{j != t} z_j - z_t, -kappa) (targeted), max(z_t - max_{j != t}
  // z_j, -kappa) (untargeted). With kappa 2 some items are past the margin: flat, gradient 0.
  Rng rng(31);
  const int64_t n = 6, k = 7;
  for (const bool targeted : {true, false})
    for (const float kappa : {0.f, 2.f}) {
      const std::string what = std::string("margin_loss ") + (targeted ? "targeted" : "untargeted") + " kappa " +
                               std::to_string(static_cast<int>(kappa));
      std::vector<float> t(n);
      for (int64_t i = 0; i < n; ++i) t[i] = static_cast<float>(rng.below(k));
      const Tensor targets = Tensor::from_vector(Shape{n}, t);
      auto ref = [&](const std::vector<std::vector<double>>& in) {
        const std::vector<double>& z = in[0];
        std::vector<double> out(n);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t c = static_cast<int64_t>(t[i]);
          double other = -INFINITY;
          for (int64_t j = 0; j < k; ++j)
            if (j != c) other = std::max(other, z[i * k + j]);
          const double m = targeted ? other - z[i * k + c] : z[i * k + c] - other;
          out[i] = std::max(m, -static_cast<double>(kappa));
        }
        return out;
      };
      test::check_op(what, {Var(randn(Shape{n, k}, rng, 3.f), true)},
                     [&](const std::vector<Var>& v) { return margin_loss(v[0], targets, kappa, targeted); }, ref, rng);
    }
}

TEST_CASE("attack kernels: projections and 8-bit rounding") {
  Rng rng(15);
  Tensor x0 = rand_uniform(Shape{50}, rng);
  Tensor x = rand_uniform(Shape{50}, rng, -0.5f, 1.5f);
  Tensor p = x.clone();
  project_linf(p, x0, 0.1f);
  const auto pv = p.to_vector(), xv = x.to_vector(), ov = x0.to_vector();
  for (int i = 0; i < 50; ++i) {
    const float lo = std::max(ov[i] - 0.1f, 0.f), hi = std::min(ov[i] + 0.1f, 1.f);
    REQUIRE(pv[i] == std::min(std::max(xv[i], lo), hi));
  }
  Tensor q = x.clone();
  project_l2(q, x0, 0.5f);
  double n = 0;
  for (int i = 0; i < 50; ++i) n += (q.to_vector()[i] - ov[i]) * (q.to_vector()[i] - ov[i]);
  CHECK(std::sqrt(n) <= 0.5 + 1e-6);
  Tensor r = Tensor::from_vector(Shape{5}, {-0.2f, 0.5f / 255.f, 0.49f / 255.f, 1.3f, std::nanf("")});
  round_to_8bit(r);
  CHECK(r.to_vector() == std::vector<float>{0.f, 1.f / 255.f, 0.f, 1.f, 0.f});
  Tensor s = Tensor::from_vector(Shape{3}, {0.5f, 0.5f, 0.995f});
  sign_step(s, Tensor::from_vector(Shape{3}, {2.f, -3.f, -1.f}), 0.01f);
  CHECK(s.to_vector()[0] == doctest::Approx(0.49f));
  CHECK(s.to_vector()[1] == doctest::Approx(0.51f));
  CHECK(s.to_vector()[2] == 1.f);  // clamped into the pixel range
}

TEST_CASE("attack kernels: adam, momentum, the L2 projection and per-item sums against double formulas") {
  Rng rng(16);
  const int n = 257;  // not a multiple of a vector width
  auto close = [](const std::vector<float>& got, const std::vector<double>& want, const char* what) {
    REQUIRE(got.size() == want.size());
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (!(std::fabs(got[i] - want[i]) <= 1e-6 + 1e-5 * std::fabs(want[i]))) {
        if (bad++ < 3) MESSAGE(what << "[" << i << "]: got " << got[i] << " want " << want[i]);
      }
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " values differ");
  };
  const auto d = [](const Tensor& t) {
    const std::vector<float> v = t.to_vector();
    return std::vector<double>(v.begin(), v.end());
  };
  for (const bool pixels : {true, false}) {
    CAPTURE(pixels);
    Tensor x = rand_uniform(Shape{n}, rng, -0.1f, 1.1f), g = randn(Shape{n}, rng), m = randn(Shape{n}, rng, 0.1f);
    Tensor v = rand_uniform(Shape{n}, rng, 0.f, 0.2f);
    std::vector<double> xd = d(x), gd = d(g), md = d(m), vd = d(v);
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8, lr = 0.01;
    const int t = 3;
    for (int i = 0; i < n; ++i) {
      md[i] = b1 * md[i] + (1 - b1) * gd[i];
      vd[i] = b2 * vd[i] + (1 - b2) * gd[i] * gd[i];
      const double mhat = md[i] / (1 - std::pow(b1, t)), vhat = vd[i] / (1 - std::pow(b2, t));
      xd[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      if (pixels) xd[i] = std::min(1.0, std::max(0.0, xd[i]));
    }
    adam_step(x, g, m, v, static_cast<float>(lr), static_cast<float>(b1), static_cast<float>(b2),
              static_cast<float>(eps), t, pixels);
    close(m.to_vector(), md, "adam m");
    close(v.to_vector(), vd, "adam v");
    close(x.to_vector(), xd, "adam x");
  }
  {
    Tensor m = randn(Shape{n}, rng), g = randn(Shape{n}, rng);
    std::vector<double> want = d(m);
    const std::vector<double> gd = d(g);
    for (int i = 0; i < n; ++i) want[i] = 0.8 * want[i] + gd[i] * 0.25;
    momentum_accumulate(m, g, 0.8f, 0.25f);
    close(m.to_vector(), want, "momentum");
  }
  for (const double eps : {0.5, 100.0}) {  // outside the ball (scaled back to it), then inside (unchanged)
    CAPTURE(eps);
    Tensor x0 = rand_uniform(Shape{n}, rng), x = rand_uniform(Shape{n}, rng, -0.2f, 1.2f);
    const std::vector<double> a = d(x), o = d(x0);
    double norm = 0;
    for (int i = 0; i < n; ++i) norm += (a[i] - o[i]) * (a[i] - o[i]);
    norm = std::sqrt(norm);
    const double f = norm > eps ? eps / norm : 1.0;
    std::vector<double> want(n);
    for (int i = 0; i < n; ++i) want[i] = std::min(1.0, std::max(0.0, o[i] + (a[i] - o[i]) * f));
    project_l2(x, x0, static_cast<float>(eps));
    close(x.to_vector(), want, "project_l2");
  }
  for (const bool square : {false, true}) {
    CAPTURE(square);
    Tensor x = randn(Shape{3, 5, 7, 2}, rng), y = Tensor::full(Shape{3}, std::nanf(""));
    const std::vector<double> xv = d(x);
    std::vector<double> want(3, 0.0);
    for (int i = 0; i < 3 * 70; ++i) want[i / 70] += square ? xv[i] * xv[i] : xv[i];
    sum_per_item(x, square, y);
    close(y.to_vector(), want, "sum_per_item");
  }
}

}  // namespace test_attack
