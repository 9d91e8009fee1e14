// trick grad IMAGE [--weights W] --target T --out G.npy [--input-size raw]: the gradient of
// the cross-entropy toward class T with respect to the model input (pixels in [0, 1], NHWC).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "layers/ops.h"
#include "models/labels.h"
#include "models/safetensors.h"
#include "kernels/gemm.h"
#include "tools/command.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/image.h"
#include "tools/lib/npy.h"
#include "tools/lib/run_model.h"

namespace trick::cmd_grad {
namespace {

struct Options {
  std::string image, weights, target, out, input_size, device = "auto", dump_activations;
  int threads = 0;
  bool json = false;
};

int run(const Options& o) {
  const bool raw = parse_input_size(o.input_size);
  if (o.threads > 0) set_num_threads(o.threads);
  check_output_file(o.out);
  if (!o.dump_activations.empty()) check_output_file(o.dump_activations);
  DecodedImage file = read_image_file(o.image);  // a bad file fails before the model loads
  const Device dev = choose_device(o.device);
  std::unique_ptr<Model> model = o.weights.empty() ? open_default_model(dev) : open_model(o.weights, dev);
  int target = 0;
  try {
    target = resolve_class(o.target, model->class_names());
  } catch (const Error& e) {
    fail("--target: ", e.what());
  }
  const Tensor image = image_tensor(file, model->input_channels());
  file = DecodedImage();
  const Tensor input = model_input_for(*model, image, raw, o.image);
  Var x(input, true);
  std::vector<std::pair<std::string, Tensor>> activations;
  Var logits, loss;
  try {
    const Tensor t = Tensor::full(Shape{1}, static_cast<float>(target)).to(dev);
    {
      ActivationObserverScope observe([&](const std::string& name, const Tensor& v) {
        if (!o.dump_activations.empty()) activations.emplace_back(name, v.to(Device::cpu()));
      });
      logits = model->forward(x);
    }
    if (!o.dump_activations.empty()) activations.emplace_back("logits", logits.value().to(Device::cpu()));
    loss = cross_entropy(logits, t);
    loss.backward();
  } catch (const Error& e) {
    rethrow_out_of_memory(
        e, cat("computing the gradient for ", o.image, " (", input.dim(2), "x", input.dim(1), " on ", dev.str(), ")"),
        dev, "close other programs");
  }
  if (!o.dump_activations.empty())
    write_safetensors(o.dump_activations, activations, {{"model", model->name()}, {"image", o.image}});
  const float l = loss.value().item();
  TRICK_CHECK(std::isfinite(l), o.image, ": the loss is not finite (NaN or Inf in the weights or the image?)");
  const Tensor g = x.grad().to(Device::cpu()).reshape(Shape{input.dim(1), input.dim(2), input.dim(3)});
  save_npy(o.out, g);
  const std::string label = model->class_names()[target];
  if (o.json) {
    nlohmann::json j{{"image", o.image}, {"target", target}, {"label", label}, {"loss", l}, {"out", o.out}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("target %d (%s)\nloss %.6f\ngradient (%lld, %lld, %lld) written to %s\n", target, label.c_str(), l,
                static_cast<long long>(g.dim(0)), static_cast<long long>(g.dim(1)),
                static_cast<long long>(g.dim(2)), o.out.c_str());
  }
  return 0;
}

const bool registered = register_command(
    {"grad", "Gradient of the loss toward a class with respect to the model input, as .npy",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("image", o->image, "Image file")->required();
       app.add_option("--weights", o->weights, "Weights (.safetensors, or a PyTorch .pth state dict); default: the embedded Fashion-MNIST model");
       app.add_option("--target,-t", o->target, "Target class: index or name (e.g. 341 or pig)")->required();
       app.add_option("--out,-o", o->out, "Output .npy file (float32, H x W x C)")->required();
       app.add_option("--input-size", o->input_size,
                      "'raw': the image already has the model's input size (no resize or crop)");
       app.add_option("--device", o->device, "auto, cpu, cuda or cuda:N");
       add_backend_options(app);
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
       app.add_flag("--json", o->json, "Print a JSON object instead of text");
       app.add_option("--dump-activations", o->dump_activations,
                      "Also write every conv layer's output (after its ReLU), by layer name, as .safetensors");
       return [o] { return run(*o); };
     },
     30});

}  // namespace
}  // namespace trick::cmd_grad
