// The attack on a small model: every method reaches a reachable target, the projections hold
// on every step, and the 8-bit result saved as PNG and read back classifies as reported.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <unistd.h>

#include "attack/attack.h"
#include "kernels/attack.h"
#include "kernels/pointwise.h"
#include "kernels/reduce.h"
#include "layers/module.h"
#include "tensor/random.h"
#include "tools/lib/image.h"
#include "tests/tiny_net.h"

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
    s.cw_lr = 0.05f;
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
