// trick eval [--weights W] [--data DIR] [--json] [--samples DIR]: a Fashion-MNIST model's
// test-set accuracy and confusion matrix; without --weights, the embedded default model.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "kernels/gemm.h"
#include "models/zoo.h"
#include "tools/command.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/fashion_train.h"
#include "tools/lib/image.h"
#include "tools/lib/run_model.h"

namespace trick::cmd_eval {
namespace {

struct Options {
  std::string weights, data = kFashionMnistDir, samples, device = "cpu";
  int64_t limit = 0;
  int threads = 0;
  bool json = false;
};

void print_confusion(const EvalResult& r, const std::vector<std::string>& names) {
  const int k = r.classes;
  size_t width = 0;
  for (const std::string& n : names) width = std::max(width, n.size());
  std::printf("confusion matrix (rows: true class, columns: predicted class)\n");
  std::printf("%*s", static_cast<int>(width + 4), "");
  for (int j = 0; j < k; ++j) std::printf(" %5d", j);
  std::printf("   recall\n");
  for (int i = 0; i < k; ++i) {
    int64_t row = 0;
    for (int j = 0; j < k; ++j) row += r.confusion[i * k + j];
    std::printf("%2d %-*s ", i, static_cast<int>(width), names[i].c_str());
    for (int j = 0; j < k; ++j) std::printf(" %5lld", static_cast<long long>(r.confusion[i * k + j]));
    std::printf("   %5.1f%%\n", row ? 100.0 * static_cast<double>(r.confusion[i * k + i]) / row : 0.0);
  }
}

// For each class, the correctly classified test image the model is most confident about.
void write_samples(const std::string& dir, const IdxDataset& test, const std::vector<float>& probs, int k,
                   const std::vector<std::string>& names, bool quiet) {
  ensure_directory(dir);
  const int64_t n = static_cast<int64_t>(probs.size()) / k;
  for (int c = 0; c < k; ++c) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (static_cast<int>(test.labels.data()[i]) != c) continue;
      const float* p = probs.data() + i * k;
      if (std::max_element(p, p + k) - p != c) continue;
      if (best < 0 || p[c] > probs[best * k + c]) best = i;
    }
    TRICK_CHECK(best >= 0, "eval --samples: no test image of class ", c, " (", names[c], ") is classified correctly");
    const std::string path = cat(dir, "/", c, "_", class_slug(names[c]), ".png");
    save_png(path, test.images.slice_first(best, best + 1));
    if (!quiet)
      std::printf("wrote %s (test image %lld, p = %.4f)\n", path.c_str(), static_cast<long long>(best),
                  probs[best * k + c]);
  }
}

int run(const Options& o) {
  TRICK_CHECK(o.limit >= 0, "--limit must be >= 0, got ", o.limit);
  if (o.threads > 0) set_num_threads(o.threads);
  const Device dev = choose_device(o.device);
  std::unique_ptr<Model> model;
  std::string source;
  if (o.weights.empty()) {
    model = load_default_model();
    source = "embedded default model";
  } else {
    model = load_weights(o.weights);
    source = o.weights;
  }
  model->set_requires_grad(false);
  model->train(false);
  model->to(dev);
  TRICK_CHECK(model->input_height() == 28 && model->input_width() == 28 && model->input_channels() == 1 &&
                  model->classes() == 10,
              source, ": model '", model->name(), "' does not take Fashion-MNIST (28x28x1, 10 classes)");
  const IdxDataset test = read_fashion_mnist(o.data, "test");
  std::vector<float> probs;
  const EvalResult r = evaluate(*model, test, o.limit, 500, o.samples.empty() ? nullptr : &probs);
  const std::vector<std::string>& names = model->class_names();
  if (!o.samples.empty()) write_samples(o.samples, test, probs, r.classes, names, o.json);
  if (o.json) {
    nlohmann::ordered_json j;
    j["weights"] = o.weights.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.weights);
    j["model"] = model->name();
    j["data"] = o.data;
    j["correct"] = r.correct;
    j["total"] = r.total;
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.2f", 100.0 * r.accuracy());
    j["accuracy_percent"] = pct;
    j["accuracy"] = r.accuracy();
    j["loss"] = r.loss;
    j["classes"] = names;
    nlohmann::json m = nlohmann::json::array();
    for (int i = 0; i < r.classes; ++i)
      m.push_back(std::vector<int64_t>(r.confusion.begin() + i * r.classes, r.confusion.begin() + (i + 1) * r.classes));
    j["confusion"] = m;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model %s (%s)\n", model->name().c_str(), source.c_str());
  std::printf("%s  mean loss %.4f\n", accuracy_line(r).c_str(), r.loss);
  print_confusion(r, names);
  return 0;
}

const bool registered = register_command(
    {"eval", "Test-set accuracy and confusion matrix of a Fashion-MNIST model (default: the embedded one)",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("--weights", o->weights,
                      "Weights or a `trick train` checkpoint (.safetensors); default: the embedded model");
       app.add_option("--data", o->data, "Folder with the Fashion-MNIST IDX files")->capture_default_str();
       app.add_flag("--json", o->json, "One JSON object: correct, total, accuracy, classes, confusion");
       app.add_option("--limit", o->limit, "Only the first N test images (0: all)");
       app.add_option("--samples", o->samples,
                      "Also write, per class, the most confidently and correctly classified test image to "
                      "DIR/<class>_<name>.png");
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
       add_cpu_conv_option(app);
       app.add_option("--device", o->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
       return [o] { return run(*o); };
     },
     61});

}  // namespace
}  // namespace trick::cmd_eval
