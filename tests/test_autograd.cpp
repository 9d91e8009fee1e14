// Autograd: order, accumulation, requires-grad propagation, freeing, no-grad.
#include <doctest/doctest.h>

#include "autograd/gradcheck.h"
#include "autograd/var.h"
#include "layers/ops.h"
#include "tests/op_check.h"
#include "tests/reference.h"

namespace test_autograd {

using namespace trick;

TEST_CASE("autograd: a value used twice accumulates both gradients") {
  // y = sum(x * x + x): dy/dx = 2x + 1
  Rng rng(1);
  Var x(randn(Shape{3, 4}, rng), true);
  sum(add(mul(x, x), x)).backward();
  const std::vector<float> xv = x.value().to_vector(), g = x.grad().to_vector();
  for (size_t i = 0; i < g.size(); ++i) REQUIRE(g[i] == doctest::Approx(2 * xv[i] + 1).epsilon(1e-6));
}

TEST_CASE("autograd: Inception-style branches sharing one input, concatenated, match central differences") {
  // x -> {1x1 conv, 3x3 conv + ReLU, 3x3 max-pool} -> concat -> sum(g * .)
  Rng rng(2);
  Tensor w1 = randn(Shape{2, 1, 1, 3}, rng), w3 = randn(Shape{2, 3, 3, 3}, rng, 0.5f);
  const Conv2dParams p1 = Conv2dParams::same(1, 0, 0), p3 = Conv2dParams::same(1, 1, 1, true);
  const Pool2dParams pp = Pool2dParams::square(3, 1, 1);
  std::vector<Var> in = {Var(randn(Shape{2, 5, 5, 3}, rng), true)};
  auto op = [&](const std::vector<Var>& v) {
    Tensor block = Tensor::empty(Shape{2, 5, 5, 7});
    Var a = conv2d(v[0], Var(w1), Var(), p1, block.slice_last(0, 2));
    Var b = conv2d(v[0], Var(w3), Var(), p3, block.slice_last(2, 4));
    Var c = max_pool2d(v[0], pp, block.slice_last(4, 7));
    return concat_into({a, b, c}, block);
  };
  auto ref = [&](const std::vector<std::vector<double>>& v) {
    int64_t oh, ow;
    const auto a = ref::conv2d(v[0], 2, 5, 5, 3, test::to_double(w1), 2, 1, 1, {}, p1, &oh, &ow);
    const auto b = ref::conv2d(v[0], 2, 5, 5, 3, test::to_double(w3), 2, 3, 3, {}, p3, &oh, &ow);
    const auto c = ref::pool2d(v[0], 2, 5, 5, 3, pp, 0, &oh, &ow);
    ref::Vec y;
    for (int r = 0; r < 50; ++r) {
      y.insert(y.end(), a.begin() + r * 2, a.begin() + r * 2 + 2);
      y.insert(y.end(), b.begin() + r * 2, b.begin() + r * 2 + 2);
      y.insert(y.end(), c.begin() + r * 3, c.begin() + r * 3 + 3);
    }
    return y;
  };
  GradCheckOptions o;
  o.atol = 2e-4;
  o.rtol = 2e-3;
  test::check_op("branches", in, op, ref, rng, o);
}

TEST_CASE("autograd: requires-grad propagates, constants and frozen inputs get nothing") {
  Var a(Tensor::full(Shape{2}, 2.f), false), b(Tensor::full(Shape{2}, 3.f), true);
  Var c = mul(a, a);
  CHECK_FALSE(c.requires_grad());
  CHECK(c.is_leaf());  // no node recorded for constants
  Var d = mul(c, b);
  CHECK(d.requires_grad());
  sum(d).backward();
  CHECK_FALSE(a.grad().defined());
  CHECK(b.grad().to_vector() == std::vector<float>{4.f, 4.f});
}

TEST_CASE("autograd: no-grad scope records nothing") {
  Var x(Tensor::full(Shape{3}, 1.f), true);
  {
    NoGradScope scope;
    Var y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
  }
  CHECK(mul(x, x).requires_grad());
}

TEST_CASE("autograd: the tape is freed as backward goes, and cannot be replayed") {
  Var x(Tensor::full(Shape{2, 2}, 1.f), true);
  Var y = relu(affine(x, 2.f, 1.f));
  Var z = sum(y);
  REQUIRE(y.state()->node);
  z.backward();
  // The node's closure (holding saved tensors) and its links to inputs are gone.
  CHECK_FALSE(static_cast<bool>(y.state()->node->backward));
  CHECK(y.state()->node->inputs.empty());
  CHECK_FALSE(y.grad().defined());  // non-leaf gradients are released unless retained
  CHECK(x.grad().to_vector() == std::vector<float>(4, 2.f));
  CHECK_THROWS_WITH_AS(z.backward(), doctest::Contains("already used"), Error);
}

TEST_CASE("autograd: leaf gradients accumulate over backward calls until zero_grad") {
  Var x(Tensor::full(Shape{2}, 3.f), true);
  sum(affine(x, 2.f, 0.f)).backward();
  sum(affine(x, 2.f, 0.f)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{4.f, 4.f});
  x.zero_grad();
  sum(affine(x, 5.f, 0.f)).backward();
  CHECK(x.grad().to_vector() == std::vector<float>{5.f, 5.f});
}

TEST_CASE("autograd: retain_grad keeps an intermediate gradient") {
  Var x(Tensor::full(Shape{2}, 1.f), true);
  Var y = affine(x, 3.f, 0.f);
  y.retain_grad();
  sum(affine(y, 2.f, 0.f)).backward();
  CHECK(y.grad().to_vector() == std::vector<float>{2.f, 2.f});
  CHECK(x.grad().to_vector() == std::vector<float>{6.f, 6.f});
}

TEST_CASE("autograd: backward needs a seed for non-scalars and a Var that requires a gradient") {
  Var x(Tensor::full(Shape{2}, 1.f), true);
  CHECK_THROWS_WITH_AS(affine(x, 1.f, 0.f).backward(), doctest::Contains("needs an explicit seed"), Error);
  Var c(Tensor::full(Shape{1}, 1.f), false);
  CHECK_THROWS_WITH_AS(c.backward(), doctest::Contains("does not require a gradient"), Error);
}

TEST_CASE("gradcheck: detects a wrong gradient and skips kinks") {
  // f(x) = sum |x|: the derivative sign(x); a point at 0 is a kink.
  auto f = [](const std::vector<double>& x) {
    double s = 0;
    for (double v : x) s += std::fabs(v);
    return s;
  };
  const std::vector<double> x = {0.5, -0.25, 0.0, 2.0};
  GradCheckReport good = check_gradient(f, x, {1.f, -1.f, 0.f, 1.f});
  CHECK(good.ok());
  CHECK(good.skipped_kinks == 1);
  GradCheckReport bad = check_gradient(f, x, {1.f, 1.f, 0.f, 1.f});
  CHECK_FALSE(bad.ok());
  CHECK(bad.first_failure.find("x[1]") != std::string::npos);
}

}  // namespace test_autograd
