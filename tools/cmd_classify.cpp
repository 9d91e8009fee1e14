// trick classify IMAGE... [--weights W] [--topk K] [--json] [--logits] [--input-size raw]
#include <cstdio>
#include <nlohmann/json.hpp>

#include "layers/ops.h"
#include "kernels/gemm.h"
#include "tools/command.h"
#include "tools/lib/image.h"
#include "tools/lib/run_model.h"

namespace trick::cmd_classify {
namespace {

struct Options {
  std::vector<std::string> images;
  std::string weights, input_size, device = "auto";
  int topk = 5;
  int threads = 0;
  bool json = false, logits = false;
};

int run(const Options& o) {
  TRICK_CHECK(o.topk >= 1, "--topk must be at least 1, got ", o.topk);
  const bool raw = parse_input_size(o.input_size);
  if (o.threads > 0) set_num_threads(o.threads);
  ImageFiles files(o.images);  // a bad file fails before the model loads
  const Device dev = choose_device(o.device);
  std::unique_ptr<Model> model = o.weights.empty() ? open_default_model(dev) : open_model(o.weights, dev);
  for (const std::string& path : o.images) {
    const Tensor image = image_tensor(files.take(path), model->input_channels());
    const Tensor input = model_input_for(*model, image, raw, path);
    NoGradScope no_grad;
    std::vector<float> z, p;
    try {
      const Var logits = model->forward(Var(input));
      z = logits.value().to_vector();
      p = softmax(logits).value().to_vector();
    } catch (const Error& e) {
      rethrow_out_of_memory(e, cat("classifying ", path, " (", input.dim(2), "x", input.dim(1), " on ", dev.str(), ")"),
                            dev, "close other programs");
    }
    for (float v : z)
      TRICK_CHECK(std::isfinite(v), path, ": the model produced a non-finite logit (NaN or Inf in ",
                  "the weights or the image?)");
    const auto top = top_k(p, model->class_names(), o.topk);
    if (o.json) {
      nlohmann::json j;
      j["image"] = path;
      j["top"] = nlohmann::json::array();
      for (const ClassScore& s : top) j["top"].push_back({{"index", s.index}, {"label", s.label}, {"prob", s.prob}});
      if (o.logits) j["logits"] = z;
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%s\n", path.c_str());
      for (size_t i = 0; i < top.size(); ++i)
        std::printf("  %zu. %7.4f  %4d  %s\n", i + 1, top[i].prob, top[i].index, top[i].label.c_str());
    }
  }
  return 0;
}

const bool registered = register_command(
    {"classify", "Top classes of images (--json for one JSON object per image)",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("images", o->images, "Image files (PNG, JPEG, ...)")->required();
       app.add_option("--weights", o->weights, "Weights (.safetensors, or a PyTorch .pth state dict); default: the embedded Fashion-MNIST model");
       app.add_option("--topk", o->topk, "How many classes to show");
       app.add_flag("--json", o->json, "One JSON object per image: top (index, label, prob)");
       app.add_flag("--logits", o->logits, "With --json: all raw logits too");
       app.add_option("--input-size", o->input_size,
                      "'raw': the image already has the model's input size (no resize or crop)");
       app.add_option("--device", o->device, "auto, cpu, cuda or cuda:N");
       add_backend_options(app);
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
       return [o] { return run(*o); };
     },
     20});

}  // namespace
}  // namespace trick::cmd_classify
