// The layer profile (autograd/profile.h) behind `trick bench --layers`: a step is cut into
// the model's named layers in the order they run, every convolution's work is counted
// (forward, and each gradient it computes), times add up to no more than the step, and a
// pass that runs other layers than the first is refused.
#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/profile.h"
#include "layers/module.h"
#include "models/zoo.h"
#include "tensor/random.h"
#include "tests/test_util.h"

namespace test_profile {

using namespace trick;
using namespace trick_test;

namespace {

// The ConvBnRelu layers of a model in registration order: "block1.branch1x1" for the
// parameter "block1.branch1x1.conv.weight".
std::vector<std::string> conv_layers(Model& m) {
  std::vector<std::string> names;
  const std::string suffix = ".conv.weight";
  for (auto& [n, p] : m.named_parameters())
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      names.push_back(n.substr(0, n.size() - suffix.size()));
  return names;
}

// Multiply-adds of each conv layer counted from what it produced (the activation observer's
// outputs) and its weight's shape, independently of the op's own count.
std::map<std::string, double> conv_flops_from_outputs(Model& m, const Tensor& x) {
  std::map<std::string, int64_t> numel;
  {
    ActivationObserverScope watch([&](const std::string& name, const Tensor& v) { numel[name] = v.numel(); });
    NoGradScope no_grad;
    (void)m.forward(Var(x));
  }
  std::map<std::string, double> flops;
  for (auto& [n, p] : m.named_parameters()) {
    const std::string suffix = ".conv.weight";
    if (n.size() <= suffix.size() || n.compare(n.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string layer = n.substr(0, n.size() - suffix.size());
    const Shape w = p->shape();  // (O, KH, KW, C)
    REQUIRE(numel.count(layer));
    flops[layer] = 2.0 * static_cast<double>(numel[layer]) * static_cast<double>(w[1] * w[2] * w[3]);
  }
  return flops;
}

}  // namespace

TEST_CASE("profile: a step of the small Inception is cut into its named layers, with each conv's work") {
  std::unique_ptr<Model> m = random_model("fashion_inception", 3);
  m->set_requires_grad(false);
  Rng rng(5);
  const int batch = 3;
  const Tensor x = rand_uniform(Shape{batch, 28, 28, 1}, rng);
  const std::map<std::string, double> expected = conv_flops_from_outputs(*m, x);
  const std::vector<std::string> convs = conv_layers(*m);
  REQUIRE(convs.size() == expected.size());

  LayerProfiler prof(make_host_clock());
  const int passes = 3;
  for (int pass = 0; pass < passes; ++pass) {
    prof.begin_pass();
    Var input(x, true);
    Var loss = cross_entropy(m->forward(input), Tensor::full(Shape{batch}, 2.f));
    loss.backward(Tensor::full(Shape{batch}, 1.f));
    prof.end_pass();
  }
  REQUIRE(prof.pass_ms().size() == static_cast<size_t>(passes));

  // The conv layers appear once each, in the model's order, with their names.
  std::vector<std::string> seen;
  for (const LayerTimes& l : prof.layers())
    if (l.ops == "conv2d") seen.push_back(l.name);
  CHECK(seen == convs);
  // Around them: the model's named pools, the blocks' own ops under their prefix, the loss.
  std::vector<std::string> names;
  for (const LayerTimes& l : prof.layers()) names.push_back(l.name);
  for (const char* n : {"normalize", "maxpool", "block1.avg_pool2d", "block1.concat", "reduce.max_pool2d", "avgpool",
                        "fc", "cross_entropy"})
    CHECK_MESSAGE(std::count(names.begin(), names.end(), std::string(n)) == 1, n);
  CHECK(names.front() == "normalize");
  CHECK(names.back() == "cross_entropy");

  for (int pass = 0; pass < passes; ++pass) {
    double sum = 0;
    for (const LayerTimes& l : prof.layers()) {
      REQUIRE(l.fwd_ms.size() == static_cast<size_t>(passes));
      REQUIRE(l.bwd_ms.size() == static_cast<size_t>(passes));
      CHECK(l.fwd_ms[pass] >= 0);
      CHECK(l.bwd_ms[pass] >= 0);
      if (l.ops == "conv2d") CHECK(l.fwd_ms[pass] > 0);
      if (l.ops == "conv2d") CHECK(l.bwd_ms[pass] > 0);  // every conv's input needs a gradient
      sum += l.fwd_ms[pass] + l.bwd_ms[pass];
    }
    CHECK(sum <= prof.pass_ms()[pass] * (1 + 1e-9));
    CHECK(sum > 0.5 * prof.pass_ms()[pass]);  // the layers are the step, not the bookkeeping
  }

  // Work: each conv's forward from its output and weight shape; its backward is the data
  // gradient alone (weights frozen), the same count. Layers without reported work have none.
  for (const LayerTimes& l : prof.layers()) {
    INFO(l.name << " (" << l.ops << ")");
    if (l.ops == "conv2d") {
      REQUIRE(expected.count(l.name));
      CHECK(l.fwd_flops == doctest::Approx(expected.at(l.name)));
      CHECK(l.bwd_flops == doctest::Approx(expected.at(l.name)));
      CHECK(l.detail.find(" -> ") != std::string::npos);
    } else if (l.ops == "linear") {
      CHECK(l.fwd_flops == doctest::Approx(2.0 * batch * 160 * 10));
      CHECK(l.bwd_flops == doctest::Approx(2.0 * batch * 160 * 10));
      CHECK(l.detail == "160 -> 10");
    } else {
      CHECK(l.fwd_flops == 0);
      CHECK(l.bwd_flops == 0);
    }
  }

  // Trainable weights: the backward adds the weight gradient's work, the same count again.
  m->set_requires_grad(true);
  prof.begin_pass();
  {
    Var input(x, true);
    Var loss = cross_entropy(m->forward(input), Tensor::full(Shape{batch}, 2.f));
    loss.backward(Tensor::full(Shape{batch}, 1.f));
  }
  prof.end_pass();
  for (const LayerTimes& l : prof.layers())
    if (l.ops == "conv2d") CHECK(l.bwd_flops == doctest::Approx(2 * expected.at(l.name)));
}

TEST_CASE("profile: Inception v3's forward is 11.43 GFLOP per image in 94 convolutions and the linear layer") {
  // shared/PERFORMANCE.md: 5.713 G multiply-adds per image at 299x299 (torchvision: 5.71 GFLOPS).
  std::unique_ptr<Model> m = random_model("inception_v3", 1);
  m->set_requires_grad(false);
  Rng rng(2);
  const Tensor x = rand_uniform(Shape{1, 299, 299, 3}, rng);
  LayerProfiler prof(make_host_clock());
  prof.begin_pass();
  {
    NoGradScope no_grad;  // forward only: the work is counted all the same
    (void)m->forward(Var(x));
  }
  prof.end_pass();
  double flops = 0;
  int convs = 0;
  std::vector<std::string> names;
  for (const LayerTimes& l : prof.layers()) {
    flops += l.fwd_flops;
    convs += l.ops == "conv2d";
    names.push_back(l.name);
    CHECK(l.bwd_flops == 0);
  }
  CHECK(convs == 94);
  CHECK(flops / 1e9 == doctest::Approx(11.43).epsilon(0.001));
  for (const char* n : {"transform_input", "Conv2d_1a_3x3", "maxpool1", "maxpool2", "Mixed_5b.avg_pool2d",
                        "Mixed_6a.max_pool2d", "Mixed_7c.branch3x3dbl_3b", "avgpool", "fc"})
    CHECK_MESSAGE(std::count(names.begin(), names.end(), std::string(n)) == 1, n);
}

TEST_CASE("profile: an unfolded conv block is one layer, nodes know their layer only while profiling") {
  Rng rng(9);
  ConvBnRelu unit(Conv2dOptions{3, 4, 3, 3, 1, 1, 1}, 1e-3f, "unit");
  unit.conv.reset_parameters(rng);
  const Tensor x = rand_uniform(Shape{2, 5, 5, 3}, rng);
  {
    Var input(x, true);
    Var y = unit.forward(input);
    REQUIRE(y.state()->node);
    CHECK(y.state()->node->layer == -1);  // no profiler
    CHECK_FALSE(profiling());
  }
  LayerProfiler prof(make_host_clock());
  prof.begin_pass();
  CHECK(profiling());
  Var input(x, true);
  Var y = relu(unit.forward(input));
  REQUIRE(y.state()->node);
  sum(y).backward();
  prof.end_pass();
  REQUIRE(prof.layers().size() == 3);  // unit, relu, sum
  CHECK(prof.layers()[0].name == "unit");
  CHECK(prof.layers()[0].ops == "conv2d+channel_affine");  // evaluation-mode batch norm, inside the layer
  CHECK(prof.layers()[0].detail == "3x3 5x5x3 -> 4");
  CHECK(prof.layers()[1].name == "relu");
  CHECK(prof.layers()[2].name == "sum");
  CHECK(prof.layers()[0].fwd_flops == doctest::Approx(2.0 * 2 * 5 * 5 * 4 * 27));
  CHECK(prof.layers()[0].bwd_flops == doctest::Approx(2 * 2.0 * 2 * 5 * 5 * 4 * 27));  // dgrad + wgrad
  CHECK(prof.layers()[0].bwd_ms[0] > 0);

  // A later pass must run the same layers in the same order.
  prof.begin_pass();
  (void)unit.forward(Var(x, true));  // the first layer only
  CHECK_THROWS_WITH_AS(prof.end_pass(), doctest::Contains("layer profile: pass 2 ran 1 layers, the first ran 3"),
                       Error);
  prof.begin_pass();  // the failed pass did not count: this is pass 2 again
  CHECK_THROWS_WITH_AS(sum(Var(x, true)), doctest::Contains("pass 2 ran 'sum' as layer 1 where the first ran 'unit'"),
                       Error);
  // And a good pass after a refused one is counted.
  prof.begin_pass();
  {
    Var in2(x, true);
    sum(relu(unit.forward(in2))).backward();
  }
  prof.end_pass();
  CHECK(prof.pass_ms().size() == 2);
  CHECK(prof.layers()[0].fwd_ms.size() == 2);
}

TEST_CASE("profile: a clock that fails as a layer ends fails the pass, not the program") {
  // The end of a layer is marked from a destructor (also while an op's error unwinds): a
  // failing clock there (a CUDA error on a GPU) must not throw out of it.
  struct FailingClock : ProfileClock {
    int marks = 0;
    int mark() override {
      if (marks == 2) throw Error("clock: broken");  // 0: the pass, 1: the layer's start, 2: its end
      return marks++;
    }
    void resolve() override {}
    double ms(int, int) const override { return 0; }
    void clear() override { marks = 0; }
  };
  LayerProfiler prof(std::make_unique<FailingClock>());
  prof.begin_pass();
  Rng rng(3);
  (void)relu(Var(rand_uniform(Shape{2, 3}, rng), true));
  CHECK_THROWS_WITH_AS(prof.end_pass(), doctest::Contains("the clock failed during pass 1"), Error);
  CHECK_FALSE(profiling());
}

TEST_CASE("profile: trick bench --layers prints every layer and writes them as JSON lines") {
  TempDir dir;
  const std::string json = dir.file("layers.jsonl");
  int status = -1;
  const std::string text = run_capture(std::string(TRICK_BINARY) +
                                           " bench --model fashion_inception --batch 2,3 --repeats 2 --warmup 1 "
                                           "--threads 1 --layers --layers-json " +
                                           json + " 2>&1",
                                       &status);
  INFO(text);
  REQUIRE(status == 0);
  CHECK(contains(text, "layers of one step (forward + input gradient), batch 2"));
  CHECK(contains(text, "layers of one step (forward + input gradient), batch 3"));
  CHECK(contains(text, "block2.branch3x3dbl_3"));
  CHECK(contains(text, "by kind"));
  CHECK(contains(text, "conv2d 3x3/2"));

  // Rows per batch: the layers in order, then the step; the work scales with the batch and
  // the backward's equals the forward's (input gradient only).
  std::unique_ptr<Model> m = random_model("fashion_inception", 1);
  const size_t convs = conv_layers(*m).size();
  // The forward's work at batch 2, counted independently: each conv from its output's size
  // and its weight's shape, plus fc (2 x in x 10 per image).
  double want_gflop_2 = 0;
  {
    Rng rng(9);
    for (const auto& [layer, f] : conv_flops_from_outputs(*m, rand_uniform(Shape{2, 28, 28, 1}, rng)))
      want_gflop_2 += f;
    for (auto& [n, p] : m->named_parameters())
      if (n == "fc.weight") want_gflop_2 += 2.0 * 2 * static_cast<double>(p->shape()[0] * p->shape()[1]);
    want_gflop_2 /= 1e9;
  }
  REQUIRE(want_gflop_2 > 0);
  std::map<int, int> layers_per_batch;
  std::map<int, double> fwd_per_batch, step_fwd;
  int steps = 0;
  std::istringstream lines(read_bytes(json));
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json r = nlohmann::json::parse(line);
    CHECK(r["engine"] == "trick");
    CHECK(r["model"] == "fashion_inception");
    const int batch = r["batch"];
    if (r["layer"].is_null()) {
      ++steps;
      CHECK(r["step_ms"].get<double>() > 0);
      CHECK(r["gflop_backward"].get<double>() == doctest::Approx(r["gflop_forward"].get<double>()));
      step_fwd[batch] = r["gflop_forward"].get<double>();
      continue;
    }
    CHECK(r["index"].get<int>() == ++layers_per_batch[batch]);
    CHECK(r["forward_ms"].get<double>() >= 0);
    fwd_per_batch[batch] += r["gflop_forward"].get<double>();
  }
  CHECK(steps == 2);
  REQUIRE(layers_per_batch.size() == 2);
  CHECK(layers_per_batch[2] == layers_per_batch[3]);
  CHECK(layers_per_batch[2] > static_cast<int>(convs));
  CHECK(fwd_per_batch[2] == doctest::Approx(want_gflop_2).epsilon(1e-6));
  CHECK(fwd_per_batch[3] == doctest::Approx(1.5 * fwd_per_batch[2]));
  for (const int b : {2, 3}) CHECK(step_fwd[b] == doctest::Approx(fwd_per_batch[b]).epsilon(1e-6));
}

TEST_CASE("profile: trick bench keeps the CPU weights packed across steps, unless --repack-weights") {
  for (const bool repack : {false, true}) {
    CAPTURE(repack);
    int status = -1;
    const std::string text = run_capture(std::string(TRICK_BINARY) +
                                             " bench --model fashion_inception --batch 2 --repeats 2 --warmup 1 "
                                             "--threads 1 --device cpu" +
                                             (repack ? " --repack-weights" : "") + " 2>&1",
                                         &status);
    INFO(text);
    REQUIRE(status == 0);
    const size_t at = text.find("{\"engine\"");
    REQUIRE(at != std::string::npos);
    const nlohmann::json r = nlohmann::json::parse(text.substr(at, text.find('\n', at) - at));
    if (repack)
      CHECK(r["cpu_weights_kept_mib"].get<double>() == 0.0);
    else
      CHECK(r["cpu_weights_kept_mib"].get<double>() > 0.0);
  }
}

TEST_CASE("profile: trick bench-conv times the chosen layers, each engine as exact as it states") {
  int status = -1;
  const std::string text = run_capture(std::string(TRICK_BINARY) +
                                           " bench-conv --repeats 1 --threads 1 --engines packed,winograd "
                                           "--layers Conv2d_4a_3x3,Mixed_7b-7c.branch3x3dbl_2 2>&1",
                                       &status);
  INFO(text);
  REQUIRE(status == 0);
  // Per engine: its row (the layer's first row names it), then the two errors in the last columns.
  std::map<std::string, std::vector<std::vector<std::string>>> rows;  // layer -> rows split in words
  std::string layer;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<std::string> w{std::istream_iterator<std::string>(words), {}};
    if (w.size() < 8 || w[0] == "layer") continue;
    if (w[0].rfind("Conv2d", 0) == 0 || w[0].rfind("Mixed", 0) == 0) layer = w[0];
    if (layer.empty() || (w.back().find("e-") == std::string::npos)) continue;
    rows[layer].push_back(w);
  }
  REQUIRE(rows.size() == 2);
  CHECK(rows.count("Conv2d_4a_3x3") == 1);
  CHECK(rows.count("Mixed_7b-7c.branch3x3dbl_2") == 1);
  for (const auto& [name, rs] : rows) {
    CAPTURE(name);
    REQUIRE(rs.size() == 2);  // packed, winograd
    for (const auto& w : rs) {
      // The two relative L2 errors against the double sum: both engines are float32 sums
      // (F(2x2) is as exact as the direct one), so both are near float rounding.
      CHECK(std::stod(w[w.size() - 2]) < 1e-5);
      CHECK(std::stod(w[w.size() - 1]) < 1e-5);
    }
  }
  // The Winograd engine takes the 73x73 layer by F(2x2) (forward; its data gradient has 192
  // input channels) and leaves the 8x8 one (64 output pixels, under 384) to the direct sum.
  CHECK(contains(text, "F(2x2) / F(2x2)"));
  CHECK(contains(text, "direct / direct"));
  CHECK(contains(text, "the layers above (each layer times its count)"));
}

}  // namespace test_profile
