// trick bench: median time of the forward pass and of forward + input gradient (one attack
// step's work) for a model, on the CPU or a GPU. tools/bench_pytorch.py times PyTorch on the
// same work for the ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "kernels/gemm.h"
#include "models/zoo.h"
#include "tensor/random.h"
#include "tools/command.h"

namespace trick {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct Options {
  std::string weights, model = "inception_v3", device = "cpu";
  int batch = 1, repeats = 10, warmup = 2, threads = 0;
  uint64_t seed = 1;
};

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  TRICK_CHECK(o.batch >= 1 && o.batch <= 4096, "--batch must be in [1, 4096], got ", o.batch);
  TRICK_CHECK(o.repeats >= 1, "--repeats must be at least 1");
  const Device dev = parse_device(o.device);
  std::unique_ptr<Model> model =
      o.weights.empty() ? random_model(o.model, o.seed) : load_model(o.weights);
  model->set_requires_grad(false);
  model->to(dev);
  Rng rng(o.seed);
  Tensor x = rand_uniform(Shape{o.batch, model->input_height(), model->input_width(), model->input_channels()}, rng)
                 .to(dev);
  Tensor targets = Tensor::full(Shape{o.batch}, 1.f).to(dev);
  auto time_it = [&](bool with_grad) {
    std::vector<double> ms;
    for (int i = 0; i < o.warmup + o.repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      if (with_grad) {
        Var input(x, true);
        sum(cross_entropy(model->forward(input), targets)).backward();
        (void)input.grad().slice_first(0, 1).to_vector();  // waits for the device
      } else {
        NoGradScope no_grad;
        (void)model->forward(Var(x)).value().to_vector();
      }
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i >= o.warmup) ms.push_back(t);
    }
    return median(ms);
  };
  const double fwd = time_it(false), step = time_it(true);
  std::printf("model %s  device %s  threads %d  batch %d  repeats %d\n", model->name().c_str(), dev.str().c_str(),
              num_threads(), o.batch, o.repeats);
  std::printf("forward               %9.2f ms  (%.2f ms/image)\n", fwd, fwd / o.batch);
  std::printf("forward + input grad  %9.2f ms  (%.2f ms/image)\n", step, step / o.batch);
  std::printf("{\"forward_ms\": %.4f, \"step_ms\": %.4f, \"batch\": %d, \"threads\": %d}\n", fwd, step, o.batch,
              num_threads());
  return 0;
}

const bool registered = register_command(
    {"bench", "Time forward and forward + input gradient (median ms)",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("--weights", o->weights, "Weights file (default: random weights)");
       app.add_option("--model", o->model, "Architecture for random weights (inception_v3, fashion)");
       app.add_option("--batch", o->batch, "Images per step");
       app.add_option("--repeats", o->repeats, "Timed repeats (the median is printed)");
       app.add_option("--warmup", o->warmup, "Untimed repeats first");
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)");
       app.add_option("--device", o->device, "cpu or cuda[:N]");
       app.add_option("--seed", o->seed, "Seed of the random weights and input");
       return [o] { return run(*o); };
     },
     80});

}  // namespace
}  // namespace trick
