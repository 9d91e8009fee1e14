// The host side of the attack's CUDA-graph step (attack/graph_step.h), which runs
// without a GPU: which settings a graph can run, how the packed per-step readout is
// read, and that the attack on the CPU is unchanged by the graph setting. The device side
// (graph vs eager bit for bit) is in tests/test_cuda.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attack/attack.h"
#include "attack/graph_step.h"
#include "kernels/pointwise.h"
#include "layers/module.h"
#include "tensor/random.h"

namespace test_graph_step {

using namespace trick;

namespace {

// conv 3x3 (3->4) ReLU, linear: 8x8x3 input, its own resize+crop from larger images.
class SmallNet : public Model {
 public:
  explicit SmallNet(uint64_t seed) {
    register_module("c1", &c1);
    register_module("fc", &fc);
    Rng rng(seed);
    c1.reset_parameters(rng);
    fc.reset_parameters(rng);
    Tensor& w = fc.weight.mutable_value();
    unary(UnaryOp::Affine, w, w, 8.f, 0.f);
    set_requires_grad(false);
  }
  Var forward(const Var& x) override {
    Var h = c1.forward(x);
    return fc.forward(reshape(h, Shape{h.shape()[0], 8 * 8 * 4}));
  }
  std::string name() const override { return "small"; }
  int input_height() const override { return 8; }
  int input_width() const override { return 8; }
  int input_channels() const override { return 3; }
  Preprocess preprocess() const override { return {10, 8}; }
  const std::vector<std::string>& class_names() const override { return names_; }

 private:
  Conv2d c1{Conv2dOptions{3, 4, 3, 3, 1, 1, 1, true, true}};
  Linear fc{256, 3};
  std::vector<std::string> names_{"a", "b", "c"};
};

Tensor grid_image(int h, int w, Rng& rng) {
  Tensor t = rand_uniform(Shape{h, w, 3}, rng);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = std::round(t.data()[i] * 255.f) / 255.f;
  return t;
}

}  // namespace

TEST_CASE("graph step: which settings a CUDA graph can run, and why not") {
  AttackSettings s;
  std::string why;
  s.method = AttackMethod::Pgd;
  CHECK_FALSE(graph_step_supported(s, Device::cpu(), &why));
  CHECK(why.find("CPU") != std::string::npos);
#ifdef TRICK_WITH_CUDA
  const Device gpu = Device::cuda(0);  // only the settings are looked at: no GPU needed
  for (AttackMethod m : {AttackMethod::Pgd, AttackMethod::Bim, AttackMethod::Fgsm, AttackMethod::Descent}) {
    s.method = m;
    CHECK_MESSAGE(graph_step_supported(s, gpu, &why), attack_method_name(m));
    CHECK(why.empty());
  }
  const std::vector<std::pair<AttackMethod, const char*>> eager = {
      {AttackMethod::Adam, "step count"}, {AttackMethod::MiFgsm, "L1 norm"}, {AttackMethod::Cw, "own loop"}};
  for (const auto& [m, reason] : eager) {
    s.method = m;
    CHECK_FALSE(graph_step_supported(s, gpu, &why));
    CHECK_MESSAGE(why.find(reason) != std::string::npos, why);
  }
  s.method = AttackMethod::Pgd;
  s.ball = Ball::L2;
  CHECK_FALSE(graph_step_supported(s, gpu, &why));
  CHECK(why.find("L2") != std::string::npos);
  s.ball = Ball::Linf;
  s.cuda_graph = false;
  CHECK_FALSE(graph_step_supported(s, gpu, &why));
  CHECK(why.find("--no-graph") != std::string::npos);
#else
  CHECK_FALSE(graph_step_supported(s, Device::cuda(0), &why));
  CHECK(why.find("no CUDA support") != std::string::npos);
#endif
}

TEST_CASE("graph step: the packed readout is read back per item") {
  // Two items, k = 3 classes; values chosen so every derived field has one right answer.
  const int64_t k = 3;
  const std::vector<int64_t> numels = {12, 300};
  const std::vector<float> packed = {
      0.2f, 0.5f, 0.3f, 1.25f, 1.5f, 16.f, 3.f, 25.f, 7.f,        // item 0: |g|^2 16, l2^2 25, 7 below
      0.1f, 0.1f, 0.8f, -0.5f, 0.25f, 2.25f, 0.f, 0.f, 300.f};    // item 1: nothing changed
  GraphStepResult r;
  unpack_readout(packed, k, numels, r);
  REQUIRE(r.probs.size() == 2);
  CHECK(r.probs[0] == std::vector<float>{0.2f, 0.5f, 0.3f});
  CHECK(r.probs[1] == std::vector<float>{0.1f, 0.1f, 0.8f});
  CHECK(r.loss[0] == 1.25);
  CHECK(r.loss[1] == -0.5);  // untargeted: the negated cross-entropy
  CHECK(r.ce[0] == 1.5);
  CHECK(r.grad_norm[0] == 4.f);
  CHECK(r.grad_norm[1] == 1.5f);
  CHECK(r.linf[0] == 3.f);
  CHECK(r.l2[0] == 5.f);
  CHECK(r.l0[0] == 12 - 7);
  CHECK(r.linf[1] == 0.f);
  CHECK(r.l2[1] == 0.f);
  CHECK(r.l0[1] == 0);
  // A readout of the wrong size is refused, naming what was expected.
  GraphStepResult bad;
  CHECK_THROWS_WITH_AS(unpack_readout(std::vector<float>(17), k, numels, bad), doctest::Contains("expected 18"), Error);
}

TEST_CASE("graph step: on the CPU it stays off and the attack is the same with or without it") {
  SmallNet model(5);
  Rng rng(11);
  std::vector<AttackItem> items = {{grid_image(12, 14, rng), 1}, {grid_image(10, 10, rng), 2}};
  AttackSettings s;
  s.method = AttackMethod::Pgd;
  s.eps = 6.f / 255.f;
  s.step = 1.f / 255.f;
  s.steps = 6;
  s.random_start = true;
  s.seed = 3;
  GraphStep g(model, s);
  CHECK_FALSE(g.enabled());
  Tensor x = items[0].image.clone(), x0 = items[0].image.clone();
  GraphStepResult out;
  CHECK_FALSE(g.run({GraphStepItem{&x, &x0, 1, 0.f}}, out));
  CHECK(g.captures() == 0);

  // On the CPU both runs take the eager path: this checks that the flag changes nothing there
  // (and that the attack is deterministic), not the graph itself, which test_cuda.cpp's
  // "cuda: attack steps replayed from a CUDA graph equal the eager steps" checks on a GPU.
  s.cuda_graph = true;
  const std::vector<ItemResult> with = run_attack(model, items, s);
  s.cuda_graph = false;
  const std::vector<ItemResult> without = run_attack(model, items, s);
  REQUIRE(with.size() == without.size());
  for (size_t i = 0; i < with.size(); ++i) {
    CHECK(with[i].adversarial_float.to_vector() == without[i].adversarial_float.to_vector());
    REQUIRE(with[i].trace.size() == without[i].trace.size());
    CHECK(with[i].trace.size() >= 2);
    for (const StepRecord& t : with[i].trace) CHECK_FALSE(t.from_graph);  // no graph on the CPU
    for (size_t t = 0; t < with[i].trace.size(); ++t) {
      CHECK(with[i].trace[t].loss == without[i].trace[t].loss);
      CHECK(with[i].trace[t].l2 == without[i].trace[t].l2);
    }
  }
}

}  // namespace test_graph_step
