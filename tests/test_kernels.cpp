// Every op's forward against a plain-loop double reference and its backward against central
// differences in double, on random shapes (odd sizes, stride 2, padding, batch > 1), plus the
// view/accumulate contracts the network relies on.
#include <doctest/doctest.h>

#include <cmath>

#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/norm.h"
#include "kernels/pointwise.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "layers/ops.h"
#include "tests/op_check.h"
#include "tests/reference.h"

namespace test_kernels {

using namespace trick;
using test::check_op;
using test::expect_close;
using test::to_double;

namespace {

GradCheckOptions grad_options() {
  GradCheckOptions o;
  o.atol = 2e-4;
  o.rtol = 2e-3;
  o.max_points = 150;
  return o;
}

struct ConvCase {
  int64_t n, h, w, c, o, kh, kw;
  int stride, pt, pb, pl, pr;
  bool bias, relu;
  const char* what;
};

const ConvCase kConvCases[] = {
    {2, 7, 9, 5, 6, 1, 1, 1, 0, 0, 0, 0, true, false, "1x1 pointwise GEMM path, batch 2"},
    {1, 8, 6, 4, 3, 1, 1, 2, 0, 0, 0, 0, false, true, "1x1 stride 2"},
    {2, 9, 7, 3, 4, 3, 3, 2, 0, 0, 0, 0, false, true, "3x3 stride 2 no padding, 3 channels"},
    {1, 7, 8, 6, 5, 3, 3, 1, 1, 1, 1, 1, true, true, "3x3 stride 1 padding 1"},
    {2, 6, 9, 4, 3, 1, 7, 1, 0, 0, 3, 3, true, true, "1x7 padding (0, 3)"},
    {1, 9, 5, 4, 5, 7, 1, 1, 3, 3, 0, 0, true, false, "7x1 padding (3, 0)"},
    {1, 5, 6, 3, 4, 1, 3, 1, 0, 0, 1, 1, false, false, "1x3"},
    {2, 6, 5, 3, 4, 3, 1, 1, 1, 1, 0, 0, true, true, "3x1, batch 2"},
    {1, 11, 10, 3, 2, 5, 5, 1, 2, 2, 2, 2, true, false, "5x5 padding 2"},
    {3, 10, 11, 3, 4, 3, 3, 2, 1, 1, 1, 1, true, true, "3x3 stride 2 padding 1, batch 3"},
    {1, 7, 7, 2, 3, 3, 2, 2, 1, 0, 0, 1, true, false, "3x2 stride 2 asymmetric padding"},
};

}  // namespace

TEST_CASE("conv2d: forward and gradients (x, w, b) against the double reference") {
  Rng rng(11);
  for (const ConvCase& k : kConvCases) {
    CAPTURE(k.what);
    Conv2dParams p;
    p.stride_h = p.stride_w = k.stride;
    p.pad_top = k.pt, p.pad_bottom = k.pb, p.pad_left = k.pl, p.pad_right = k.pr;
    p.relu = k.relu;
    std::vector<Var> in = {Var(randn(Shape{k.n, k.h, k.w, k.c}, rng), true),
                           Var(randn(Shape{k.o, k.kh, k.kw, k.c}, rng, 0.5f), true)};
    if (k.bias) in.push_back(Var(randn(Shape{k.o}, rng), true));
    auto op = [&](const std::vector<Var>& v) { return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Var(), p); };
    auto ref = [&](const std::vector<std::vector<double>>& v) {
      int64_t oh, ow;
      return ref::conv2d(v[0], k.n, k.h, k.w, k.c, v[1], k.o, k.kh, k.kw, v.size() > 2 ? v[2] : ref::Vec{}, p, &oh,
                         &ow);
    };
    check_op(std::string("conv2d ") + k.what, in, op, ref, rng, grad_options());
  }
}

TEST_CASE("conv2d: channel-slice input and output views, accumulating gradients") {
  // The input is channels [2, 7) of a 9-channel tensor; the output goes to channels [3, 7) of a
  // 10-channel block output: the case of every Inception branch.
  Rng rng(12);
  Conv2dParams p = Conv2dParams::same(1, 1, 1, true);
  for (int kh : {1, 3}) {
    CAPTURE(kh);
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = kh / 2;
    Tensor big = randn(Shape{2, 5, 6, 9}, rng);
    Tensor x = big.slice_last(2, 7);
    Tensor w = randn(Shape{4, kh, kh, 5}, rng, 0.5f), b = randn(Shape{4}, rng);
    Tensor block = test::nan_tensor(Shape{2, 5, 6, 10});
    Tensor y = block.slice_last(3, 7);
    conv2d_forward(x, w, b, p, y);
    int64_t oh, ow;
    const auto want = ref::conv2d(to_double(x), 2, 5, 6, 5, to_double(w), 4, kh, kh, to_double(b), p, &oh, &ow);
    expect_close(y, want, "conv2d into a slice");
    // Channels outside the slice were not touched (still NaN).
    const std::vector<float> all = block.to_vector();
    for (size_t i = 0; i < all.size(); ++i) {
      const int64_t ch = static_cast<int64_t>(i % 10);
      if (ch < 3 || ch >= 7) REQUIRE(std::isnan(all[i]));
    }
    // dgrad into a slice of a larger gradient, accumulating onto existing values.
    Tensor dy = randn(Shape{2, 5, 6, 4}, rng);
    Tensor gbig = randn(Shape{2, 5, 6, 9}, rng);
    const std::vector<float> before = gbig.to_vector();
    Tensor dx = gbig.slice_last(2, 7);
    conv2d_dgrad(dy, w, p, dx, true);
    Tensor fresh = test::nan_tensor(Shape{2, 5, 6, 5});
    conv2d_dgrad(dy, w, p, fresh, false);
    const std::vector<float> after = gbig.to_vector(), f = fresh.to_vector();
    for (int64_t r = 0; r < 2 * 5 * 6; ++r)
      for (int64_t ch = 0; ch < 9; ++ch) {
        const float want_v = (ch >= 2 && ch < 7) ? before[r * 9 + ch] + f[r * 5 + ch - 2] : before[r * 9 + ch];
        REQUIRE(after[r * 9 + ch] == doctest::Approx(want_v).epsilon(1e-5));
      }
  }
}

TEST_CASE("conv2d: frozen weights run dgrad only, never wgrad") {
  Rng rng(13);
  Var x(randn(Shape{1, 6, 6, 3}, rng), true);
  Var w(randn(Shape{4, 3, 3, 3}, rng), false);  // frozen
  Var b(randn(Shape{4}, rng), false);
  Var w2(randn(Shape{2, 1, 1, 4}, rng), false);
  const ConvCallCounts before = conv_call_counts();
  Var y = conv2d(conv2d(x, w, b, Conv2dParams::same(1, 1, 1, true)), w2, Var(), Conv2dParams::same(1, 0, 0));
  sum(y).backward();
  const ConvCallCounts after = conv_call_counts();
  CHECK(after.forward - before.forward == 2);
  CHECK(after.dgrad - before.dgrad == 2);
  CHECK(after.wgrad - before.wgrad == 0);
  CHECK(x.grad().defined());
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(b.grad().defined());
  // Unfrozen: wgrad runs once per conv.
  w.set_requires_grad(true);
  const ConvCallCounts b2 = conv_call_counts();
  sum(conv2d(x, w, b, Conv2dParams::same(1, 1, 1))).backward();
  CHECK(conv_call_counts().wgrad - b2.wgrad == 1);
  CHECK(w.grad().defined());
}

TEST_CASE("conv2d: a shape mismatch names the op, the layer and both shapes") {
  Conv2dParams p;
  p.name = "Mixed_5b.branch1x1";
  Tensor x = Tensor::zeros(Shape{1, 5, 5, 64}), w = Tensor::zeros(Shape{8, 1, 1, 32});
  Tensor y = Tensor::zeros(Shape{1, 5, 5, 8});
  try {
    conv2d_forward(x, w, Tensor(), p, y);
    FAIL("no error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("conv2d") != std::string::npos);
    CHECK(m.find("(1, 5, 5, 64)") != std::string::npos);
    CHECK(m.find("(8, 1, 1, 32)") != std::string::npos);
    CHECK(m.find("Mixed_5b.branch1x1") != std::string::npos);
  }
  Tensor wrong_out = Tensor::zeros(Shape{1, 4, 5, 8});
  Tensor w64 = Tensor::zeros(Shape{8, 1, 1, 64});
  CHECK_THROWS_WITH_AS(conv2d_forward(x, w64, Tensor(), p, wrong_out),
                       doctest::Contains("output has shape (1, 4, 5, 8), expected (1, 5, 5, 8)"), Error);
}

namespace {
struct PoolCase {
  int64_t n, h, w, c;
  Pool2dParams p;
  const char* what;
};
Pool2dParams rect(int kh, int kw, int sh, int sw, int pt, int pb, int pl, int pr, bool count_pad) {
  Pool2dParams p;
  p.kernel_h = kh, p.kernel_w = kw, p.stride_h = sh, p.stride_w = sw;
  p.pad_top = pt, p.pad_bottom = pb, p.pad_left = pl, p.pad_right = pr;
  p.count_include_pad = count_pad;
  return p;
}
const PoolCase kPoolCases[] = {
    {1, 9, 9, 3, Pool2dParams::square(3, 2, 0, true), "3x3 stride 2 (Inception's max-pools)"},
    {2, 7, 8, 5, Pool2dParams::square(3, 1, 1, true), "3x3 stride 1 pad 1 counting padding (Inception's avg-pools)"},
    {2, 7, 8, 5, Pool2dParams::square(3, 1, 1, false), "3x3 stride 1 pad 1 not counting padding"},
    {1, 10, 7, 4, Pool2dParams::square(2, 2, 0, true), "2x2 stride 2"},
    {3, 6, 5, 2, Pool2dParams::square(3, 2, 1, true), "3x3 stride 2 pad 1, batch 3"},
    {1, 5, 6, 3, Pool2dParams::square(3, 2, 1, false), "3x3 stride 2 pad 1 not counting padding"},
    {2, 7, 9, 3, rect(2, 3, 1, 2, 1, 0, 0, 1, true), "2x3 strides (1, 2), padding top 1 and right 1"},
    {1, 8, 6, 4, rect(3, 1, 2, 1, 1, 1, 0, 0, false), "3x1 strides (2, 1), padding top and bottom, not counted"},
};
}  // namespace

TEST_CASE("max_pool2d: forward and gradient against the double reference") {
  Rng rng(21);
  for (const PoolCase& k : kPoolCases) {
    CAPTURE(k.what);
    const Pool2dParams p = k.p;
    std::vector<Var> in = {Var(randn(Shape{k.n, k.h, k.w, k.c}, rng), true)};
    check_op(std::string("max_pool2d ") + k.what, in,
             [&](const std::vector<Var>& v) { return max_pool2d(v[0], p); },
             [&](const std::vector<std::vector<double>>& v) {
               int64_t oh, ow;
               return ref::pool2d(v[0], k.n, k.h, k.w, k.c, p, 0, &oh, &ow);
             },
             rng, grad_options());
  }
}

TEST_CASE("max_pool2d: ties send the gradient to the first maximum, as PyTorch does") {
  // One 2x2 window of equal values: only the first (top-left) gets the gradient.
  Var x(Tensor::full(Shape{1, 2, 2, 1}, 3.f), true);
  Var y = max_pool2d(x, Pool2dParams::square(2, 2));
  y.backward(Tensor::full(Shape{1, 1, 1, 1}, 5.f));
  const std::vector<float> g = x.grad().to_vector();
  CHECK(g == std::vector<float>{5.f, 0.f, 0.f, 0.f});
}

TEST_CASE("avg_pool2d: forward and gradient against the double reference") {
  Rng rng(22);
  for (const PoolCase& k : kPoolCases) {
    CAPTURE(k.what);
    const Pool2dParams p = k.p;
    std::vector<Var> in = {Var(randn(Shape{k.n, k.h, k.w, k.c}, rng), true)};
    check_op(std::string("avg_pool2d ") + k.what, in,
             [&](const std::vector<Var>& v) { return avg_pool2d(v[0], p); },
             [&](const std::vector<std::vector<double>>& v) {
               int64_t oh, ow;
               return ref::pool2d(v[0], k.n, k.h, k.w, k.c, p, 1, &oh, &ow);
             },
             rng, grad_options());
  }
}

TEST_CASE("global_avg_pool: forward and gradient against the double reference") {
  Rng rng(23);
  std::vector<Var> in = {Var(randn(Shape{3, 5, 7, 6}, rng), true)};
  check_op("global_avg_pool", in, [](const std::vector<Var>& v) { return global_avg_pool(v[0]); },
           [](const std::vector<std::vector<double>>& v) { return ref::global_avg_pool(v[0], 3, 35, 6); }, rng,
           grad_options());
}

TEST_CASE("batch_norm: training forward and gradients (x, gamma, beta) against the double reference") {
  Rng rng(31);
  // (2, 9, 9, 512): 162 rows in blocks of 64, the statistics summed over three partial blocks.
  for (auto shape : {Shape{4, 3, 5, 6}, Shape{7, 5}, Shape{2, 9, 9, 512}}) {
    CAPTURE(shape.str());
    const int64_t c = shape[-1], rows = shape.numel() / c;
    Tensor rm = Tensor::zeros(Shape{c}), rv = Tensor::full(Shape{c}, 1.f);
    std::vector<Var> in = {Var(randn(shape, rng, 2.f), true), Var(rand_uniform(Shape{c}, rng, 0.5f, 1.5f), true),
                           Var(randn(Shape{c}, rng), true)};
    check_op("batch_norm " + shape.str(), in,
             [&](const std::vector<Var>& v) { return batch_norm_train(v[0], v[1], v[2], rm, rv, 1e-3f, 0.1f); },
             [&](const std::vector<std::vector<double>>& v) {
               return ref::batch_norm(v[0], rows, c, v[1], v[2], 1e-3);
             },
             rng, grad_options());
  }
}

TEST_CASE("batch_norm: running statistics follow PyTorch (momentum, unbiased variance)") {
  Rng rng(32);
  Tensor x = randn(Shape{3, 2, 2, 2}, rng);
  Tensor rm = Tensor::full(Shape{2}, 0.5f), rv = Tensor::full(Shape{2}, 2.f);
  Var out = batch_norm_train(Var(x), Var(Tensor::full(Shape{2}, 1.f)), Var(Tensor::zeros(Shape{2})), rm, rv, 1e-5f,
                             0.1f);
  const std::vector<double> xv = to_double(x);
  for (int ch = 0; ch < 2; ++ch) {
    double m = 0, v = 0;
    for (int r = 0; r < 12; ++r) m += xv[r * 2 + ch] / 12;
    for (int r = 0; r < 12; ++r) v += (xv[r * 2 + ch] - m) * (xv[r * 2 + ch] - m) / 11;
    CHECK(rm.to_vector()[ch] == doctest::Approx(0.9 * 0.5 + 0.1 * m).epsilon(1e-5));
    CHECK(rv.to_vector()[ch] == doctest::Approx(0.9 * 2.0 + 0.1 * v).epsilon(1e-5));
  }
}

TEST_CASE("channel_affine: evaluation-mode batch norm, with and without ReLU") {
  Rng rng(33);
  for (bool relu_on : {false, true}) {
    Tensor scale = randn(Shape{4}, rng), shift = randn(Shape{4}, rng);
    std::vector<Var> in = {Var(randn(Shape{2, 3, 3, 4}, rng), true)};
    const auto s = to_double(scale), t = to_double(shift);
    check_op("channel_affine", in,
             [&](const std::vector<Var>& v) { return channel_affine(v[0], scale, shift, relu_on); },
             [&](const std::vector<std::vector<double>>& v) {
               ref::Vec y(v[0].size());
               for (size_t i = 0; i < y.size(); ++i) {
                 y[i] = v[0][i] * s[i % 4] + t[i % 4];
                 if (relu_on) y[i] = std::max(0.0, y[i]);
               }
               return y;
             },
             rng, grad_options());
  }
}

TEST_CASE("linear: forward and gradients (x, w, b) against the double reference") {
  Rng rng(41);
  std::vector<Var> in = {Var(randn(Shape{3, 7}, rng), true), Var(randn(Shape{5, 7}, rng), true),
                         Var(randn(Shape{5}, rng), true)};
  check_op("linear", in, [](const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); },
           [](const std::vector<std::vector<double>>& v) { return ref::linear(v[0], 3, 7, v[1], 5, v[2]); }, rng,
           grad_options());
}

TEST_CASE("relu: forward and gradient, kinks skipped") {
  Rng rng(42);
  Tensor x = randn(Shape{4, 9}, rng);
  x.data()[3] = 0.f;  // exactly at the kink: must be detected and skipped, not fail
  std::vector<Var> in = {Var(x, true)};
  check_op("relu", in, [](const std::vector<Var>& v) { return relu(v[0]); },
           [](const std::vector<std::vector<double>>& v) {
             ref::Vec y = v[0];
             for (double& e : y) e = std::max(0.0, e);
             return y;
           },
           rng, grad_options());
}

TEST_CASE("softmax, log_softmax, cross_entropy: forward and gradients against the double reference") {
  Rng rng(51);
  // Smooth ops with gradients of at most ~1: an absolute tolerance of 1e-6 (float32 gets
  // ~1e-7), so that small entries (a probability of 1e-4 times its upstream gradient) are
  // checked too, not waved through by the conv tests' 2e-4.
  GradCheckOptions o = grad_options();
  o.atol = 1e-6;
  for (const float scale : {1.f, 3.f}) {
    INFO("logits of scale " << scale);
    {
      std::vector<Var> in = {Var(randn(Shape{3, 11}, rng, scale), true)};
      check_op("softmax", in, [](const std::vector<Var>& v) { return softmax(v[0]); },
               [](const std::vector<std::vector<double>>& v) { return ref::softmax(v[0], 3, 11); }, rng, o);
    }
    {
      std::vector<Var> in = {Var(randn(Shape{4, 9}, rng, scale), true)};
      check_op("log_softmax", in, [](const std::vector<Var>& v) { return log_softmax(v[0]); },
               [](const std::vector<std::vector<double>>& v) { return ref::log_softmax(v[0], 4, 9); }, rng, o);
    }
    {
      Tensor targets = Tensor::from_vector(Shape{4}, {3.f, 0.f, 8.f, 3.f});
      std::vector<Var> in = {Var(randn(Shape{4, 9}, rng, scale), true)};
      check_op("cross_entropy", in, [&](const std::vector<Var>& v) { return cross_entropy(v[0], targets); },
               [](const std::vector<std::vector<double>>& v) { return ref::cross_entropy(v[0], 4, 9, {3, 0, 8, 3}); },
               rng, o);
    }
  }
  {
    // Large logits stay finite (max subtraction).
    Var big(Tensor::from_vector(Shape{1, 3}, {1000.f, 0.f, -1000.f}));
    const std::vector<float> p = softmax(big).value().to_vector();
    CHECK(p[0] == doctest::Approx(1.0));
    CHECK(p[2] == 0.f);
    Tensor t = Tensor::from_vector(Shape{1}, {2.f});
    CHECK(cross_entropy(big, t).value().item() == doctest::Approx(2000.0));
  }
  {
    Tensor bad = Tensor::from_vector(Shape{2}, {1.f, 9.f});
    CHECK_THROWS_WITH_AS(cross_entropy(Var(Tensor::zeros(Shape{2, 9})), bad),
                         doctest::Contains("target 9 of item 1 is not a class index in [0, 9)"), Error);
  }
}

TEST_CASE("elementwise: add, sub, mul, affine, clamp, tanh, sign against the double reference") {
  Rng rng(61);
  const Shape s{2, 3, 4, 5};
  auto two = [&] {
    return std::vector<Var>{Var(randn(s, rng), true), Var(randn(s, rng), true)};
  };
  auto zip = [](const std::vector<std::vector<double>>& v, double (*f)(double, double)) {
    ref::Vec y(v[0].size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = f(v[0][i], v[1][i]);
    return y;
  };
  check_op("add", two(), [](const std::vector<Var>& v) { return add(v[0], v[1]); },
           [&](const std::vector<std::vector<double>>& v) { return zip(v, [](double a, double b) { return a + b; }); },
           rng, grad_options());
  check_op("sub", two(), [](const std::vector<Var>& v) { return sub(v[0], v[1]); },
           [&](const std::vector<std::vector<double>>& v) { return zip(v, [](double a, double b) { return a - b; }); },
           rng, grad_options());
  check_op("mul", two(), [](const std::vector<Var>& v) { return mul(v[0], v[1]); },
           [&](const std::vector<std::vector<double>>& v) { return zip(v, [](double a, double b) { return a * b; }); },
           rng, grad_options());
  check_op("affine", {Var(randn(s, rng), true)}, [](const std::vector<Var>& v) { return affine(v[0], 2.f, -1.f); },
           [](const std::vector<std::vector<double>>& v) {
             ref::Vec y = v[0];
             for (double& e : y) e = 2 * e - 1;
             return y;
           },
           rng, grad_options());
  check_op("clamp", {Var(randn(s, rng), true)}, [](const std::vector<Var>& v) { return clamp(v[0], -0.5f, 0.7f); },
           [](const std::vector<std::vector<double>>& v) {
             ref::Vec y = v[0];
             for (double& e : y) e = std::min(std::max(e, -0.5), 0.7);
             return y;
           },
           rng, grad_options());
  check_op("tanh", {Var(randn(s, rng, 2.f), true)}, [](const std::vector<Var>& v) { return tanh(v[0]); },
           [](const std::vector<std::vector<double>>& v) {
             ref::Vec y = v[0];
             for (double& e : y) e = std::tanh(e);
             return y;
           },
           rng, grad_options());
  Tensor x = Tensor::from_vector(Shape{5}, {-2.f, -0.f, 0.f, 1e-30f, 3.f});
  CHECK(sign(Var(x)).value().to_vector() == std::vector<float>{-1.f, 0.f, 0.f, 1.f, 1.f});
  CHECK_THROWS_WITH_AS(add(Var(Tensor::zeros(Shape{2, 3})), Var(Tensor::zeros(Shape{3, 2}))),
                       doctest::Contains("add: a has shape (2, 3) but b has shape (3, 2)"), Error);
}

TEST_CASE("pointwise kernels: every unary and binary op on channel slices and in place, against double formulas") {
  // Inputs and outputs are row-strided channel slices (the output's neighbours hold NaN, which
  // must survive), then the same op in place (output = input), as kernels/pointwise.h allows.
  Rng rng(62);
  const int64_t rows = 13, cols = 7;
  auto check_slice = [&](const Tensor& wide, const std::vector<double>& want, const std::string& what) {
    const std::vector<float> v = wide.to_vector();
    int bad = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols + 3; ++c) {
        const float got = v[r * (cols + 3) + c];
        if (c < 1 || c > cols) {
          bad += !std::isnan(got);  // outside the slice: untouched
          continue;
        }
        const double w = want[r * cols + c - 1];
        bad += !(std::fabs(got - w) <= 1e-6 * std::max(1.0, std::fabs(w)));
      }
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " values wrong");
  };
  const Tensor xw = randn(Shape{rows, cols + 2}, rng, 2.f), bw = randn(Shape{rows, cols + 4}, rng);
  const Tensor x = xw.slice_last(2, 2 + cols), b = bw.slice_last(1, 1 + cols);
  const std::vector<double> xv = to_double(x.contiguous()), bv = to_double(b.contiguous());
  struct U {
    UnaryOp op;
    float a, b;
    const char* name;
    double (*f)(double, double, double);
  };
  const U unaries[] = {
      {UnaryOp::Affine, 1.5f, -0.25f, "affine", [](double x, double a, double b) { return a * x + b; }},
      {UnaryOp::Relu, 1, 0, "relu", [](double x, double, double) { return std::max(x, 0.0); }},
      {UnaryOp::Sign, 1, 0, "sign", [](double x, double, double) { return double((x > 0) - (x < 0)); }},
      {UnaryOp::Clamp, -0.5f, 0.7f, "clamp", [](double x, double a, double b) { return std::min(std::max(x, a), b); }},
      {UnaryOp::Square, 1, 0, "square", [](double x, double, double) { return x * x; }},
      {UnaryOp::Exp, 1, 0, "exp", [](double x, double, double) { return std::exp(x); }},
      {UnaryOp::Abs, 1, 0, "abs", [](double x, double, double) { return std::fabs(x); }},
      {UnaryOp::Tanh, 1, 0, "tanh", [](double x, double, double) { return std::tanh(x); }},
  };
  for (const U& u : unaries) {
    std::vector<double> want(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) want[i] = u.f(xv[i], u.a, u.b);
    Tensor out = test::nan_tensor(Shape{rows, cols + 3});
    Tensor y = out.slice_last(1, 1 + cols);
    unary(u.op, x, y, u.a, u.b);
    check_slice(out, want, std::string(u.name) + " into a slice");
    Tensor inplace = test::nan_tensor(Shape{rows, cols + 3});
    Tensor t = inplace.slice_last(1, 1 + cols);
    copy(x, t);
    unary(u.op, t, t, u.a, u.b);
    check_slice(inplace, want, std::string(u.name) + " in place");
  }
  const std::pair<BinaryOp, const char*> binaries[] = {{BinaryOp::Add, "add"}, {BinaryOp::Sub, "sub"},
                                                      {BinaryOp::Mul, "mul"}};
  for (const auto& [op, name] : binaries) {
    std::vector<double> want(xv.size());
    for (size_t i = 0; i < xv.size(); ++i)
      want[i] = op == BinaryOp::Add ? xv[i] + bv[i] : op == BinaryOp::Sub ? xv[i] - bv[i] : xv[i] * bv[i];
    Tensor out = test::nan_tensor(Shape{rows, cols + 3});
    Tensor y = out.slice_last(1, 1 + cols);
    binary(op, x, b, y);
    check_slice(out, want, std::string(name) + " into a slice");
    Tensor inplace = test::nan_tensor(Shape{rows, cols + 3});
    Tensor t = inplace.slice_last(1, 1 + cols);
    copy(x, t);
    binary(op, t, b, t);  // the output is the first input
    check_slice(inplace, want, std::string(name) + " in place");
  }
}

TEST_CASE("reductions: max with ties sends the gradient to the first maximum") {
  Var x(Tensor::from_vector(Shape{2, 5}, {0.f, 1.f, -2.f, 4.f, 3.f, 2.f, 4.f, 4.f, -1.f, 0.f}), true);
  Var m = max(x);
  CHECK(m.value().item() == 4.f);
  m.backward(Tensor::full(Shape{1}, 3.f));
  CHECK(x.grad().to_vector() == std::vector<float>{0.f, 0.f, 0.f, 3.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f});
}

TEST_CASE("reductions: sum, mean, max forward and gradients, per-item norms") {
  Rng rng(71);
  const Shape s{3, 4, 5};
  check_op("sum", {Var(randn(s, rng), true)}, [](const std::vector<Var>& v) { return sum(v[0]); },
           [](const std::vector<std::vector<double>>& v) {
             double t = 0;
             for (double e : v[0]) t += e;
             return ref::Vec{t};
           },
           rng, grad_options());
  check_op("mean", {Var(randn(s, rng), true)}, [](const std::vector<Var>& v) { return mean(v[0]); },
           [](const std::vector<std::vector<double>>& v) {
             double t = 0;
             for (double e : v[0]) t += e;
             return ref::Vec{t / v[0].size()};
           },
           rng, grad_options());
  check_op("max", {Var(randn(s, rng), true)}, [](const std::vector<Var>& v) { return max(v[0]); },
           [](const std::vector<std::vector<double>>& v) {
             return ref::Vec{*std::max_element(v[0].begin(), v[0].end())};
           },
           rng, grad_options());
  Tensor x = randn(s, rng);
  Tensor l2 = Tensor::empty(Shape{3}), linf = Tensor::empty(Shape{3});
  sum_per_item(x, true, l2);
  max_abs_per_item(x, linf);
  const auto xv = to_double(x);
  ref::Vec want_l2(3, 0.0), want_inf(3, 0.0);
  for (int b = 0; b < 3; ++b)
    for (int i = 0; i < 20; ++i) {
      want_l2[b] += xv[b * 20 + i] * xv[b * 20 + i];
      want_inf[b] = std::max(want_inf[b], std::fabs(xv[b * 20 + i]));
    }
  expect_close(l2, want_l2, "sum of squares per item");
  expect_close(linf, want_inf, "max |x| per item");
}

TEST_CASE("concat_batch: stacks along the batch dim, gradients split by item") {
  Rng rng(82);
  std::vector<Var> in = {Var(randn(Shape{1, 3, 2, 2}, rng), true), Var(randn(Shape{2, 3, 2, 2}, rng), true)};
  check_op("concat_batch", in, [](const std::vector<Var>& v) { return concat_batch(v); },
           [](const std::vector<std::vector<double>>& v) {
             ref::Vec y = v[0];
             y.insert(y.end(), v[1].begin(), v[1].end());
             return y;
           },
           rng, grad_options());
}

TEST_CASE("concat: forward copies, in-place parts are not copied, gradients split by slice") {
  Rng rng(81);
  std::vector<Var> in = {Var(randn(Shape{2, 3, 3, 2}, rng), true), Var(randn(Shape{2, 3, 3, 5}, rng), true),
                         Var(randn(Shape{2, 3, 3, 1}, rng), true)};
  check_op("concat", in, [](const std::vector<Var>& v) { return concat(v); },
           [](const std::vector<std::vector<double>>& v) {
             ref::Vec y;
             for (int r = 0; r < 18; ++r) {
               y.insert(y.end(), v[0].begin() + r * 2, v[0].begin() + r * 2 + 2);
               y.insert(y.end(), v[1].begin() + r * 5, v[1].begin() + r * 5 + 5);
               y.insert(y.end(), v[2].begin() + r * 1, v[2].begin() + r * 1 + 1);
             }
             return y;
           },
           rng, grad_options());
  // Branches that wrote into their slice of the block output: concat_into copies nothing.
  Tensor block = test::nan_tensor(Shape{1, 4, 4, 7});
  Var x(randn(Shape{1, 4, 4, 3}, rng), true);
  const Var wa(randn(Shape{3, 1, 1, 3}, rng)), wc(randn(Shape{1, 3, 3, 3}, rng));
  Var a = conv2d(x, wa, Var(), Conv2dParams::same(1, 0, 0), block.slice_last(0, 3));
  Var b = max_pool2d(x, Pool2dParams::square(3, 1, 1), block.slice_last(3, 6));
  Var c = conv2d(x, wc, Var(), Conv2dParams::same(1, 1, 1), block.slice_last(6, 7));
  Var y = concat_into({a, b, c}, block);
  CHECK(y.value().data() == block.data());
  for (float v : block.to_vector()) REQUIRE_FALSE(std::isnan(v));
  // The same branches into tensors of their own, concatenated by copying: the same values,
  // and the same input gradient through the slices.
  Var x2(x.value().clone(), true);
  Var y2 = concat({conv2d(x2, wa, Var(), Conv2dParams::same(1, 0, 0)), max_pool2d(x2, Pool2dParams::square(3, 1, 1)),
                   conv2d(x2, wc, Var(), Conv2dParams::same(1, 1, 1))});
  CHECK(y.value().to_vector() == y2.value().to_vector());
  const Tensor g = randn(y.value().shape(), rng);
  y.backward(g);
  y2.backward(g);
  expect_close(x.grad(), to_double(x2.grad()), "concat_into: input gradient", 1e-6, 1e-7);
}

TEST_CASE("gemm: transposes, leading dimensions and beta against the double reference") {
  // M = 3 takes the few-row path, M = 5 OpenBLAS; K = 0 is C = beta * C; beta = 0 must not
  // read C (it starts as NaN there).
  Rng rng(91);
  for (const int64_t M : {int64_t{3}, int64_t{5}})
    for (const int64_t K : {int64_t{6}, int64_t{0}})
      for (const float beta : {2.f, 0.f})
        for (int ta = 0; ta < 2; ++ta)
          for (int tb = 0; tb < 2; ++tb) {
            CAPTURE(M);
            CAPTURE(K);
            CAPTURE(beta);
            CAPTURE(ta);
            CAPTURE(tb);
            const int64_t N = 7, lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 1, ldc = N + 3;
            Tensor A = randn(Shape{std::max<int64_t>(ta ? K : M, 1), lda}, rng);
            Tensor B = randn(Shape{std::max<int64_t>(tb ? N : K, 1), ldb}, rng);
            Tensor C = randn(Shape{M, ldc}, rng);
            if (beta == 0.f)
              for (int64_t i = 0; i < M; ++i)
                for (int64_t j = 0; j < N; ++j) C.data()[i * ldc + j] = std::nanf("");
            const auto a = to_double(A), b = to_double(B), c0 = to_double(C);
            gemm(Device::cpu(), ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
            ref::Vec want(M * ldc);
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < ldc; ++j) {
                if (j >= N) {
                  want[i * ldc + j] = c0[i * ldc + j];  // outside the matrix: untouched
                  continue;
                }
                double s = 0;
                for (int64_t k = 0; k < K; ++k)
                  s += (ta ? a[k * lda + i] : a[i * lda + k]) * (tb ? b[j * ldb + k] : b[k * ldb + j]);
                want[i * ldc + j] = 0.5 * s + (beta == 0.f ? 0.0 : beta * c0[i * ldc + j]);
              }
            expect_close(C, want, "gemm");
          }
}

}  // namespace test_kernels
