// Modules: names, state dicts, batch-norm folding, training-mode conv blocks.
#include <doctest/doctest.h>

#include <cmath>

#include "layers/module.h"
#include "tests/op_check.h"
#include "tests/reference.h"

namespace test_layers {

using namespace trick;

namespace {
struct Block : Module {
  ConvBnRelu branch1x1{Conv2dOptions{3, 4, 1, 1, 1, 0, 0}, 1e-3f, "branch1x1"};
  Linear fc{4, 2};
  Block() {
    register_module("branch1x1", &branch1x1);
    register_module("fc", &fc);
  }
};
struct Net : Module {
  Block Mixed_5b;
  Net() { register_module("Mixed_5b", &Mixed_5b); }
};
}  // namespace

TEST_CASE("layers: parameters and buffers have hierarchical names") {
  Net net;
  std::vector<std::string> names;
  for (auto& [n, p] : net.named_parameters()) names.push_back(n);
  CHECK(names == std::vector<std::string>{"Mixed_5b.branch1x1.conv.weight", "Mixed_5b.branch1x1.bn.weight",
                                          "Mixed_5b.branch1x1.bn.bias", "Mixed_5b.fc.weight", "Mixed_5b.fc.bias"});
  std::vector<std::string> buffers;
  for (auto& [n, t] : net.named_buffers()) buffers.push_back(n);
  CHECK(buffers ==
        std::vector<std::string>{"Mixed_5b.branch1x1.bn.running_mean", "Mixed_5b.branch1x1.bn.running_var"});
  CHECK(net.parameter_count() == 4 * 3 + 4 + 4 + 8 + 2);
}

TEST_CASE("layers: load_state_dict copies by name and names what is missing, extra or mis-shaped") {
  Net net;
  StateDict sd = net.state_dict();
  Rng rng(1);
  StateDict fresh;
  for (auto& [n, t] : sd) fresh[n] = randn(t.shape(), rng);
  net.load_state_dict(fresh);
  const StateDict loaded = net.state_dict();  // parameters and buffers (running statistics)
  CHECK(loaded.size() == fresh.size());
  for (auto& [n, t] : fresh) {
    CAPTURE(n);
    REQUIRE(loaded.count(n));
    CHECK(loaded.at(n).to_vector() == t.to_vector());
  }
  StateDict bad = fresh;
  bad.erase("Mixed_5b.fc.bias");
  bad["Mixed_5b.extra.weight"] = Tensor::zeros(Shape{1});
  bad["Mixed_5b.fc.weight"] = Tensor::zeros(Shape{3, 4});
  try {
    net.load_state_dict(bad);
    FAIL("no error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("1 missing: Mixed_5b.fc.bias") != std::string::npos);
    CHECK(m.find("1 unexpected: Mixed_5b.extra.weight") != std::string::npos);
    CHECK(m.find("Mixed_5b.fc.weight (file (3, 4), model (2, 4))") != std::string::npos);
  }
}

TEST_CASE("layers: folding batch norm into the conv gives the same output as conv then eval-mode BN + ReLU") {
  Rng rng(2);
  ConvBnRelu block(Conv2dOptions{3, 5, 3, 3, 2, 1, 1}, 1e-3f, "test");
  block.conv.reset_parameters(rng);
  block.bn.weight.mutable_value().copy_from(rand_uniform(Shape{5}, rng, 0.5f, 2.f));
  block.bn.bias.mutable_value().copy_from(randn(Shape{5}, rng));
  block.bn.running_mean.copy_from(randn(Shape{5}, rng));
  block.bn.running_var.copy_from(rand_uniform(Shape{5}, rng, 0.2f, 3.f));
  block.train(false);
  Var x(randn(Shape{2, 9, 8, 3}, rng));
  const Tensor unfolded = block.forward(x).value();
  // The unfolded block against the definition: relu((conv(x) - mean) / sqrt(var + eps) * gamma + beta),
  // in double (the eps of 1e-3 matters at this tolerance).
  {
    Conv2dParams p;
    p.stride_h = p.stride_w = 2;
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = 1;
    int64_t oh = 0, ow = 0;
    std::vector<double> want = ref::conv2d(test::to_double(x.value()), 2, 9, 8, 3,
                                           test::to_double(block.conv.weight.value()), 5, 3, 3, {}, p, &oh, &ow);
    const std::vector<double> g = test::to_double(block.bn.weight.value()), b = test::to_double(block.bn.bias.value());
    const std::vector<double> mu = test::to_double(block.bn.running_mean), var = test::to_double(block.bn.running_var);
    for (size_t i = 0; i < want.size(); ++i) {
      const size_t ch = i % 5;
      want[i] = std::max(0.0, (want[i] - mu[ch]) / std::sqrt(var[ch] + 1e-3) * g[ch] + b[ch]);
    }
    test::expect_close(unfolded, want, "unfolded vs the definition", 1e-4, 1e-5);
  }
  block.fold();
  CHECK(block.folded());
  const Tensor folded = block.forward(x).value();
  test::expect_close(folded, test::to_double(unfolded), "folded vs unfolded", 1e-4, 1e-5);
  bool any_zero = false;
  for (float v : folded.to_vector()) any_zero = any_zero || v == 0.f;
  CHECK(any_zero);  // the ReLU epilogue is there
}

TEST_CASE("layers: a training step of conv-BN-ReLU + linear lowers the loss") {
  Rng rng(3);
  ConvBnRelu conv(Conv2dOptions{1, 6, 3, 3, 1, 1, 1}, 1e-5f);
  conv.conv.reset_parameters(rng);
  Linear fc(6, 3);
  fc.reset_parameters(rng);
  conv.train(true);
  // Learnable after global pooling: class 0 horizontal stripes, 1 vertical, 2 checkerboard.
  Tensor x = randn(Shape{8, 6, 6, 1}, rng, 0.3f);
  Tensor t = Tensor::from_vector(Shape{8}, {0, 1, 2, 0, 1, 2, 0, 1});
  for (int i = 0; i < 8; ++i) {
    const int k = static_cast<int>(t.data()[i]);
    for (int r = 0; r < 6; ++r)
      for (int c = 0; c < 6; ++c) {
        const int on = k == 0 ? r % 2 : k == 1 ? c % 2 : (r + c) % 2;
        x.data()[(i * 6 + r) * 6 + c] += on ? 1.f : -1.f;
      }
  }
  auto loss_of = [&] { return mean(cross_entropy(fc.forward(global_avg_pool(conv.forward(Var(x)))), t)); };
  std::vector<Var*> params = conv.parameters();
  for (Var* p : fc.parameters()) params.push_back(p);
  const float first = loss_of().value().item();
  for (int step = 0; step < 60; ++step) {
    for (Var* p : params) p->zero_grad();
    Var l = loss_of();
    l.backward();
    for (Var* p : params) {
      REQUIRE(p->grad().defined());
      Tensor v = p->mutable_value();
      const std::vector<float> g = p->grad().to_vector();
      for (int64_t i = 0; i < v.numel(); ++i) v.data()[i] -= 0.3f * g[i];
    }
  }
  const float last = loss_of().value().item();
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.5f * first);
}

TEST_CASE("layers: dropout keeps the expectation and is off in evaluation") {
  Dropout d(0.3f, 7);
  d.train(true);
  Var x(Tensor::full(Shape{20000}, 1.f));
  const std::vector<float> y = d.forward(x).value().to_vector();
  double m = 0;
  int zeros = 0;
  for (float v : y) m += v / 20000.0, zeros += v == 0.f;
  CHECK(std::abs(m - 1.0) < 0.03);
  CHECK(std::abs(zeros / 20000.0 - 0.3) < 0.02);
  d.train(false);
  CHECK(d.forward(x).value().to_vector() == x.value().to_vector());
}

}  // namespace test_layers
