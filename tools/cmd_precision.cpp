// trick precision IMAGE... [--weights W | --model NAME [--seed S]] [--target T] [--modes tf32,bf16] [--device D]
// [--json]
//
// What the tensor-core math modes cost in exactness, on real weights and images: the logits,
// the probabilities, the loss and the input gradient (what the attack follows) in each mode
// against fp32 on the same device and backend. On a GPU that is the mode itself (our kernels,
// cuBLAS or cuDNN: --conv); on the CPU the modes are emulated (kernels/cpu/tensor_core_emulation.h:
// operands rounded as our GPU kernel rounds them, sums in fp32), which predicts our GPU
// kernel's error to the order of its fp32 sums.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "layers/ops.h"
#include "models/labels.h"
#include "models/zoo.h"
#include "tools/command.h"
#include "tools/lib/image.h"
#include "tools/lib/run_model.h"

namespace trick::cmd_precision {
namespace {

struct Options {
  std::vector<std::string> images;
  std::string weights, model, target, modes = "tf32,bf16", input_size, device = "auto";
  uint64_t seed = 0;
  int threads = 0;
  bool json = false;
  bool target_given = false;  // --target '' is an error, not the default
};

struct Outputs {
  std::vector<float> logits, probs, grad;
  float loss = 0.f;
  int target = 0;
};

// One forward and backward in `mode`, the loss toward `target`; target < 0: toward the class
// this run ranks first (from the same forward).
Outputs run_mode(Model& model, const Tensor& input, int target, MathMode mode, const std::string& path) {
  MathModeScope scope(mode);
  Var x(input, true);
  Var logits = model.forward(x);
  Outputs o;
  o.logits = logits.value().to_vector();
  o.target =
      target >= 0 ? target : static_cast<int>(std::max_element(o.logits.begin(), o.logits.end()) - o.logits.begin());
  Var loss = cross_entropy(logits, Tensor::full(Shape{1}, static_cast<float>(o.target)).to(input.device()));
  loss.backward();
  o.probs = softmax(logits).value().to_vector();
  o.loss = loss.value().item();
  o.grad = x.grad().to_vector();
  TRICK_CHECK(std::isfinite(o.loss), path, ": the loss is not finite in ", math_mode_name(mode),
              " (NaN or Inf in the weights or the image, or past the format's range?)");
  return o;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}

// The share of the gradient's elements whose sign (-, 0, +) is the same: a sign step (fgsm,
// bim, pgd) moves those pixels the same way.
double sign_agreement(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.empty()) return 1.0;
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += (a[i] > 0) - (a[i] < 0) == (b[i] > 0) - (b[i] < 0);
  return static_cast<double>(same) / static_cast<double>(a.size());
}

std::vector<MathMode> parse_modes(const std::string& list) {
  std::vector<MathMode> modes;
  std::stringstream ss(list);
  for (std::string m; std::getline(ss, m, ',');) {
    MathMode mode = MathMode::FP32;
    try {
      mode = parse_math_mode(m);
    } catch (const Error& e) {
      fail("--modes: ", e.what());
    }
    TRICK_CHECK(mode != MathMode::FP32,
                "--modes: fp32 is the reference every mode is compared with; name tf32 and/or bf16");
    TRICK_CHECK(std::find(modes.begin(), modes.end(), mode) == modes.end(), "--modes: ", m, " is named twice");
    modes.push_back(mode);
  }
  TRICK_CHECK(!modes.empty(), "--modes: name tf32 and/or bf16");
  return modes;
}

int run(const Options& o) {
  const bool raw = parse_input_size(o.input_size);
  const std::vector<MathMode> modes = parse_modes(o.modes);
  if (o.threads > 0) set_num_threads(o.threads);
  ImageFiles files(o.images);  // a bad file fails before the model loads
  const Device dev = choose_device(o.device);
  const bool cudnn = dev.is_cuda() && conv_backend() == ConvBackend::Cudnn;
  std::unique_ptr<Model> model;
  if (!o.model.empty()) {
    model = random_model(o.model, o.seed);
    model->set_requires_grad(false);
    model->train(false);
    model->to(dev);
  } else {
    model = o.weights.empty() ? open_default_model(dev) : open_model(o.weights, dev);
  }
  int fixed_target = -1;
  if (o.target_given) try {
      fixed_target = resolve_class(o.target, model->class_names());
    } catch (const Error& e) {
      fail("--target: ", e.what());
    }
  const std::string how = dev.is_cpu()
                              ? "emulated on the CPU: operands rounded as our GPU kernel rounds them, fp32 sums"
                              : cat("on ", dev.str(), ", conv ", conv_backend_name(conv_backend()));
  if (!o.json) std::printf("model %s  modes against fp32, %s\n", model->name().c_str(), how.c_str());
  FrozenConvWeights frozen;  // weights never change here: the CPU keeps its prepared (and rounded) copies
  for (const std::string& path : o.images) {
    const Tensor image = image_tensor(files.take(path), model->input_channels());
    const Tensor input = model_input_for(*model, image, raw, path);
    // The target: the one asked for, else the class fp32 ranks first (its gradient then
    // makes the image more of what it is; an attack asks for another class with --target).
    const Outputs ref = run_mode(*model, input, fixed_target, MathMode::FP32, path);
    const int target = ref.target;
    const std::vector<ClassScore> ref_top5 = top_k(ref.probs, model->class_names(), 5);
    const std::string& top1_label = ref_top5[0].label;
    nlohmann::json j{{"image", path},
                     {"model", model->name()},
                     {"device", dev.str()},
                     {"conv", dev.is_cpu() ? "cpu (emulated)" : conv_backend_name(conv_backend())},
                     {"target", target},
                     {"target_label", model->class_names()[target]},
                     {"fp32",
                      {{"top1", ref_top5[0].index},
                       {"top1_label", top1_label},
                       {"top1_prob", ref_top5[0].prob},
                       {"target_prob", ref.probs[target]},
                       {"loss", ref.loss}}},
                     {"modes", nlohmann::json::array()}};
    if (!o.json) {
      std::printf("\n%s  target %d (%s)\n  fp32: top-1 %d (%s) p %.4f, target p %.4g, loss %.6g\n", path.c_str(),
                  target, model->class_names()[target].c_str(), ref_top5[0].index, top1_label.c_str(), ref_top5[0].prob,
                  ref.probs[target], ref.loss);
      std::printf("  %-5s %13s %12s %11s %9s %6s %6s %12s %12s %10s\n", "mode", "logits relL2", "max|dlogit|",
                  "max|dprob|", "loss rel", "top-1", "top-5", "grad relL2", "grad cosine", "grad sign");
    }
    for (const MathMode mode : modes) {
      if (cudnn && mode == MathMode::BF16) {
        // cuDNN has no bf16 mode for fp32 tensors (kernels/backend.h)
        j["modes"].push_back({{"mode", "bf16"}, {"skipped", "cuDNN has no bf16 mode for fp32 tensors"}});
        if (!o.json) std::printf("  %-5s (skipped: cuDNN has no bf16 mode for fp32 tensors)\n", "bf16");
        continue;
      }
      const Outputs got = run_mode(*model, input, target, mode, path);
      const std::vector<ClassScore> top5 = top_k(got.probs, model->class_names(), 5);
      std::set<int> a;
      for (const ClassScore& c : ref_top5) a.insert(c.index);
      int overlap = 0;
      for (const ClassScore& c : top5) overlap += static_cast<int>(a.count(c.index));
      const double el = rel_l2(got.logits, ref.logits), ml = max_abs_diff(got.logits, ref.logits),
                   mp = max_abs_diff(got.probs, ref.probs),
                   lr = std::fabs(static_cast<double>(got.loss) - ref.loss) /
                        std::max(std::fabs(static_cast<double>(ref.loss)), 1e-30),
                   eg = rel_l2(got.grad, ref.grad), cg = cosine(got.grad, ref.grad),
                   sg = sign_agreement(got.grad, ref.grad);
      const bool same_top1 = top5[0].index == ref_top5[0].index;
      j["modes"].push_back({{"mode", math_mode_name(mode)},
                            {"logits_rel_l2", el},
                            {"logits_max_abs", ml},
                            {"probs_max_abs", mp},
                            {"loss_rel", lr},
                            {"top1_same", same_top1},
                            {"top5_overlap", overlap},
                            {"target_prob", got.probs[target]},
                            {"grad_rel_l2", eg},
                            {"grad_cosine", cg},
                            {"grad_sign_agreement", sg}});
      if (!o.json)
        std::printf("  %-5s %13.3e %12.3e %11.3e %9.2e %6s %4d/5 %12.3e %12.6f %9.4f%%\n", math_mode_name(mode), el, ml,
                    mp, lr, same_top1 ? "same" : "DIFF", overlap, eg, cg, 100.0 * sg);
    }
    if (o.json) std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

const bool registered = register_command(
    {"precision", "How far the tensor-core modes (tf32, bf16) move logits and input gradient from fp32",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("images", o->images, "Image files (PNG, JPEG, ...)")->required();
       app.add_option(
           "--weights", o->weights,
           "Weights (.safetensors, or a PyTorch .pth state dict); default: the embedded Fashion-MNIST model");
       auto* random = app.add_option("--model", o->model,
                                     "Random weights of this architecture (inception_v3, fashion_inception) "
                                     "instead of a weight file: how a mode treats the network, not trained weights");
       app.add_option("--seed", o->seed, "Seed of the random weights (with --model)")->check(whole_number());
       app.get_option("--weights")->excludes(random);
       auto* target = app.add_option(
           "--target,-t", o->target,
           "Class whose cross-entropy gives the input gradient: index or name (default: fp32's top class)");
       app.add_option("--modes", o->modes, "Modes to compare with fp32, comma-separated (default tf32,bf16)");
       app.add_option("--input-size", o->input_size,
                      "'raw': the image already has the model's input size (no resize or crop)");
       app.add_option("--device", o->device, "auto, cpu (modes emulated), cuda or cuda:N");
       add_backend_options(app, nullptr, /*math=*/false);
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
       app.add_flag("--json", o->json, "One JSON object per image");
       return [o, target] {
         o->target_given = target->count() > 0;
         return run(*o);
       };
     },
     35});

}  // namespace
}  // namespace trick::cmd_precision
