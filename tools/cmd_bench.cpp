// trick bench: median time of the forward pass and of forward + input gradient (one attack
// step's work) for a model, on the CPU or a GPU, at one or more batch sizes.
//
// On a GPU the time is taken with CUDA events around each repeat (after warm-up), either
// of eager execution or of the replay of a CUDA graph captured from the same calls
// (--graph, the default; --no-graph: eager; --both: each, and a check that the graph's
// input gradient equals the eager one bit for bit). --conv and --tf32 / --bf16 choose
// the convolution backend and precision. Every row is also printed as one JSON line
// (tools/gpu_check.sh merges them with tools/bench_gpu.py's PyTorch rows).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/profile.h"
#include "kernels/backend.h"
#include "kernels/conv.h"
#include "kernels/cpu/prepared.h"
#include "kernels/cpu/sgemm_conv.h"
#include "kernels/gemm.h"
#include "models/zoo.h"
#include "tensor/graph_pool.h"
#include "tensor/random.h"
#include "tools/command.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/run_model.h"

#ifdef TRICK_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/graph.h"
#include "tensor/cuda_status.h"
#endif

namespace trick::cmd_bench {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct Options {
  std::string weights, model = "inception_v3", device = "cpu";
  std::vector<int> batches{1};
  int repeats = 10, warmup = 2, threads = 0;
  bool graph = true, both = false;
  bool layers = false;      // --layers: per-layer times of the step instead of the summary
  bool repack = false;      // --repack-weights: no FrozenConvWeights scope
  std::string layers_json;  // --layers-json FILE: those rows as JSON lines, too
  uint64_t seed = 1;
};

// GFLOP per image of the forward pass and of forward + input gradient, where known
// (shared/PERFORMANCE.md: Inception v3 at 299x299, multiply-adds counted as 2).
bool gflop_per_image(const Model& m, double* fwd, double* step) {
  if (m.name() == "inception_v3" && m.input_height() == 299 && m.input_width() == 299) {
    *fwd = 11.43, *step = 22.85;
    return true;
  }
  return false;
}

// The work to time, on fixed input and output buffers (so a graph can replay it).
struct Work {
  Model& model;
  Tensor x, targets, seed, grad;
  void forward() {
    NoGradScope no_grad;
    (void)model.forward(Var(x));
  }
  void step() {
    Var input(x, true);
    Var loss = cross_entropy(model.forward(input), targets);
    // Seeded with ones (the gradient of their sum), as the attack's graph step does: no
    // host read of the loss inside the timed region.
    loss.backward(seed);
    grad = input.grad();
  }
};

double process_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

// Milliseconds per repeat: the median over `repeats` after `warmup` untimed ones. cpu_ms, if
// given, gets the median CPU time of the process (all threads) per repeat: on a shared
// machine it moves much less than the wall time, and CPU / wall shows the threads' use.
double time_cpu(const std::function<void()>& f, const std::function<void()>& wait, int warmup, int repeats,
                double* cpu_ms = nullptr) {
  std::vector<double> ms, cpu;
  for (int i = 0; i < warmup + repeats; ++i) {
    const double c0 = process_cpu_ms();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    wait();
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) ms.push_back(t), cpu.push_back(process_cpu_ms() - c0);
  }
  if (cpu_ms) *cpu_ms = median(cpu);
  return median(ms);
}

#ifdef TRICK_WITH_CUDA
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("bench: ", what, ": ", cuda_status_text(e));
}

// CUDA events around each repeat on `stream` (0: the legacy stream eager work runs on).
double time_cuda(const std::function<void()>& f, cudaStream_t stream, int warmup, int repeats) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  std::vector<double> ms;
  for (int i = 0; i < warmup + repeats; ++i) {
    check(cudaEventRecord(a, stream), "cudaEventRecord");
    f();
    check(cudaEventRecord(b, stream), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float t = 0;
    check(cudaEventElapsedTime(&t, a, b), "cudaEventElapsedTime");
    if (i >= warmup) ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(ms);
}
#endif

struct Row {
  int batch = 0;
  bool graph = false;
  double fwd_ms = 0, step_ms = 0;
  double fwd_cpu_ms = -1, step_cpu_ms = -1;  // CPU: process CPU time per repeat (all threads)
  double graph_vs_eager = -1;  // max |graph - eager| of the input gradient (--both), else -1
  int64_t mallocs = 0;         // cudaMalloc calls during the timed repeats
  size_t nodes = 0;            // operations in the step's graph
};

// The convolution engine: on the CPU, the implicit-GEMM kernels or OpenBLAS
// (kernels/cpu/sgemm_conv.h); on a GPU, the backend (kernels/backend.h).
const char* conv_name(Device dev) { return dev.is_cpu() ? cpu::conv_engine_name() : conv_backend_name(conv_backend()); }

// The split-K policy of our GPU kernels (kernels/backend.h), as --split-k takes it.
std::string split_k_name() {
  const SplitKPolicy p = split_k_policy();
  return p.warps_per_sm == 0 ? std::string("off") : cat(p.warps_per_sm, ",", p.min_k);
}

void print_row(const Options& o, const Model& m, Device dev, const Row& r) {
  double gf = 0, gs = 0;
  const bool known = gflop_per_image(m, &gf, &gs);
  const double fwd_ips = r.batch / (r.fwd_ms * 1e-3), step_ips = r.batch / (r.step_ms * 1e-3);
  const std::string mode = dev.is_cpu() ? "cpu" : (r.graph ? "graph" : "eager");
  // null: not compared (JSON has no infinity either).
  const std::string diff = r.graph_vs_eager >= 0 && std::isfinite(r.graph_vs_eager) ? cat(r.graph_vs_eager) : "null";
  auto tflops = [&](double ips, double gflop) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3f", ips * gflop / 1e3);
    return known ? std::string(b) : std::string("-");
  };
  std::printf("%5d  %-5s  %10.3f  %10.1f  %7s  %11.3f  %11.1f  %7s\n", r.batch, mode.c_str(), r.fwd_ms, fwd_ips,
              tflops(fwd_ips, gf).c_str(), r.step_ms, step_ips, tflops(step_ips, gs).c_str());
  auto ms_or_null = [](double v) { return v >= 0 ? cat(v) : std::string("null"); };
  auto gflop_json = [&](double v) {  // null where the model's work is not tabulated (not 0)
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return known ? std::string(b) : std::string("null");
  };
  std::printf(
      "{\"engine\": \"trick\", \"model\": \"%s\", \"device\": \"%s\", \"conv\": \"%s\", \"math\": \"%s\", "
      "\"mode\": \"%s\", \"batch\": %d, \"forward_ms\": %.4f, \"step_ms\": %.4f, \"threads\": %d, "
      "\"forward_cpu_ms\": %s, \"step_cpu_ms\": %s, "
      "\"gflop_forward\": %s, \"gflop_step\": %s, \"graph_vs_eager_max_abs\": %s, \"mallocs_in_loop\": %lld, "
      "\"graph_nodes\": %zu, \"repeats\": %d, \"split_k\": \"%s\", \"cudnn_algo\": \"%s\", "
      "\"cpu_weights_kept_mib\": %.1f}\n",
      m.name().c_str(), dev.str().c_str(), conv_name(dev), math_mode_name(math_mode()), mode.c_str(), r.batch,
      r.fwd_ms, r.step_ms, num_threads(), ms_or_null(r.fwd_cpu_ms).c_str(), ms_or_null(r.step_cpu_ms).c_str(),
      gflop_json(gf).c_str(), gflop_json(gs).c_str(), diff.c_str(), static_cast<long long>(r.mallocs), r.nodes, o.repeats,
      split_k_name().c_str(), cudnn_algo_name(cudnn_algo()),
      static_cast<double>(cpu::prepared_stats().bytes) / (1 << 20));
  std::fflush(stdout);
}

// --layers: `repeats` profiled steps after `warmup` plain ones, then one row per layer of the
// step (autograd/profile.h): the medians of its forward and backward time, its share of the
// step, and its rate where its ops report their work (convolutions, linear layers).
void print_layers(const Options& o, const Model& m, Device dev, int batch, const LayerProfiler& prof,
                  nlohmann::json* rows) {
  const bool gpu = dev.is_cuda();
  const double unit = gpu ? 1e12 : 1e9;  // TFLOP/s on a GPU, GFLOP/s on the CPU
  const char* rate_name = gpu ? "TFLOP/s" : "GFLOP/s";
  const double step = median(prof.pass_ms());
  auto rate = [&](double flops, double ms) {
    char b[32];
    if (flops <= 0 || ms <= 0) return std::string("-");
    std::snprintf(b, sizeof b, gpu ? "%.2f" : "%.1f", flops / (ms * 1e-3) / unit);
    return std::string(b);
  };
  auto gflop = [](double flops) {
    char b[32];
    if (flops <= 0) return std::string("-");
    std::snprintf(b, sizeof b, "%.3f", flops / 1e9);
    return std::string(b);
  };
  std::printf("layers of one step (forward + input gradient), batch %d, %s, eager; medians of %d profiled steps\n",
              batch, dev.str().c_str(), o.repeats);
  std::printf("%4s  %-26s %-16s %-26s %8s %9s %8s %9s %8s %6s\n", "#", "layer", "ops", "shape", "GFLOP", "fwd ms",
              rate_name, "bwd ms", rate_name, "share");
  struct Kind {
    std::string name;
    int layers = 0;
    double flops_f = 0, flops_b = 0, fwd = 0, bwd = 0;
  };
  std::vector<Kind> kinds;
  double sum_f = 0, sum_b = 0, flops_f = 0, flops_b = 0;
  int i = 0;
  for (const LayerTimes& l : prof.layers()) {
    const double f = median(l.fwd_ms), b = median(l.bwd_ms);
    sum_f += f, sum_b += b, flops_f += l.fwd_flops, flops_b += l.bwd_flops;
    std::printf("%4d  %-26s %-16s %-26s %8s %9.3f %8s %9.3f %8s %5.1f%%\n", ++i, l.name.c_str(), l.ops.c_str(),
                l.detail.c_str(), gflop(l.fwd_flops).c_str(), f, rate(l.fwd_flops, f).c_str(), b,
                rate(l.bwd_flops, b).c_str(), step > 0 ? 100 * (f + b) / step : 0.0);
    // By kind: the op, and for convolutions and pools the window ("conv2d 3x3/2").
    std::string kind = l.ops;
    const bool windowed = l.ops == "conv2d" || l.ops == "max_pool2d" || l.ops == "avg_pool2d";
    if (windowed && !l.detail.empty()) kind += " " + l.detail.substr(0, l.detail.find(' '));
    auto k = std::find_if(kinds.begin(), kinds.end(), [&](const Kind& x) { return x.name == kind; });
    if (k == kinds.end()) k = kinds.insert(kinds.end(), Kind{kind});
    ++k->layers, k->flops_f += l.fwd_flops, k->flops_b += l.bwd_flops, k->fwd += f, k->bwd += b;
    if (rows)
      rows->push_back({{"engine", "trick"}, {"model", m.name()}, {"device", dev.str()}, {"conv", conv_name(dev)},
                       {"math", math_mode_name(math_mode())}, {"batch", batch}, {"index", i}, {"layer", l.name},
                       {"ops", l.ops}, {"shape", l.detail}, {"forward_ms", f}, {"backward_ms", b},
                       {"gflop_forward", l.fwd_flops / 1e9}, {"gflop_backward", l.bwd_flops / 1e9},
                       {"repeats", o.repeats}});
  }
  const double rest = step - sum_f - sum_b;
  std::printf("%4s  %-70s %8s %9.3f %8s %9.3f %8s %5.1f%%\n", "", "all layers (sum of their medians)",
              gflop(flops_f).c_str(), sum_f, rate(flops_f, sum_f).c_str(), sum_b, rate(flops_b, sum_b).c_str(),
              step > 0 ? 100 * (sum_f + sum_b) / step : 0.0);
  std::printf("%4s  step: %.3f ms (median of the profiled steps), %s GFLOP, %s %s; between layers (allocation, "
              "autograd, seeding): %.1f%%\n\n",
              "", step, gflop(flops_f + flops_b).c_str(), rate(flops_f + flops_b, step).c_str(), rate_name,
              step > 0 ? 100 * rest / step : 0.0);
  std::printf("%-26s %6s %8s %9s %9s %6s %8s\n", "by kind", "layers", "GFLOP", "fwd ms", "bwd ms", "share", rate_name);
  std::stable_sort(kinds.begin(), kinds.end(), [](const Kind& a, const Kind& b) { return a.fwd + a.bwd > b.fwd + b.bwd; });
  for (const Kind& k : kinds)
    std::printf("%-26s %6d %8s %9.3f %9.3f %5.1f%% %8s\n", k.name.c_str(), k.layers, gflop(k.flops_f).c_str(), k.fwd,
                k.bwd, step > 0 ? 100 * (k.fwd + k.bwd) / step : 0.0,
                rate(k.flops_f + k.flops_b, k.fwd + k.bwd).c_str());
  std::printf("\n");
  if (rows)
    rows->push_back({{"engine", "trick"}, {"model", m.name()}, {"device", dev.str()}, {"conv", conv_name(dev)},
                     {"math", math_mode_name(math_mode())}, {"batch", batch}, {"layer", nullptr}, {"step_ms", step},
                     {"gflop_forward", flops_f / 1e9}, {"gflop_backward", flops_b / 1e9}, {"repeats", o.repeats}});
  std::fflush(stdout);
}

// The profiled steps of --layers for one batch size.
void run_layers(const Options& o, Model& m, Device dev, Work& w, int batch, nlohmann::json* rows) {
  for (int i = 0; i < o.warmup; ++i) w.step();
  LayerProfiler prof(make_profile_clock(dev));
  for (int r = 0; r < o.repeats; ++r) {
    prof.begin_pass();
    w.step();
    prof.end_pass();
  }
  w.grad = Tensor();
  print_layers(o, m, dev, batch, prof, rows);
}

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  TRICK_CHECK(!o.batches.empty(), "--batch needs at least one size");
  for (int b : o.batches) TRICK_CHECK(b >= 1 && b <= 4096, "--batch must be in [1, 4096], got ", b);
  TRICK_CHECK(o.repeats >= 1, "--repeats must be at least 1");
  TRICK_CHECK(o.warmup >= 0, "--warmup must be at least 0, got ", o.warmup);
  if (!o.layers_json.empty()) check_output_file(o.layers_json);
  // On the CPU --tf32 and --bf16 are emulated (kernels/cpu/tensor_core_emulation.h): an
  // accuracy tool, slower than fp32, so bench times fp32 there.
  const MathMode asked = math_mode();
  set_math_mode(MathMode::FP32);
  const Device dev = choose_device(o.device);
  if (dev.is_cuda()) set_math_mode(asked);
  else if (asked != MathMode::FP32)
    std::fprintf(stderr,
                 "note: --%s on the CPU is an emulation for measuring its error (trick precision), not a speed; "
                 "bench times fp32\n",
                 math_mode_name(asked));
  std::unique_ptr<Model> model = open_frozen(o.weights.empty() ? cat("a random ", o.model) : o.weights, dev, [&] {
    return o.weights.empty() ? random_model(o.model, o.seed) : load_weights(o.weights);
  });
  // As in the attack loop: the CPU engines pack (and transform) each layer's weights once,
  // unless --repack-weights asks for the cost of doing it every call.
  std::unique_ptr<FrozenConvWeights> frozen;
  if (!o.repack) frozen = std::make_unique<FrozenConvWeights>();
  std::string detail;  // the backend's own setting
  if (dev.is_cuda() && conv_backend() == ConvBackend::Own) detail = "  split-k " + split_k_name();
  if (dev.is_cuda() && conv_backend() == ConvBackend::Cudnn) detail = cat("  cudnn-algo ", cudnn_algo_name(cudnn_algo()));
  const MathMode math = math_mode();  // fp32 on the CPU (set above)
  std::printf("model %s  device %s  conv %s%s  math %s%s  threads %d  repeats %d (median)\n", model->name().c_str(),
              dev.str().c_str(), conv_name(dev), detail.c_str(), math_mode_name(math),
              math == MathMode::TF32   ? " (faster, less exact: trick precision measures how much)"
              : math == MathMode::BF16 ? " (fastest, least exact: trick precision measures how much)"
                                       : "",
              num_threads(), o.repeats);
  if (o.layers && dev.is_cuda() && o.graph)
    std::fprintf(stderr, "note: --layers times each layer of eager steps (a CUDA graph replays as one launch)\n");
  if (!o.layers) std::printf("batch  mode   forward ms       img/s  TFLOP/s  fwd+grad ms  img-steps/s  TFLOP/s\n");
  nlohmann::json rows = nlohmann::json::array();
  std::string graph_differs;  // --both: the batches whose graph gradient is not the eager one
  Rng rng(o.seed);
  for (int b : o.batches) try {
    Work w{*model,
           rand_uniform(Shape{b, model->input_height(), model->input_width(), model->input_channels()}, rng).to(dev),
           Tensor::full(Shape{b}, 1.f).to(dev), Tensor::full(Shape{b}, 1.f).to(dev), Tensor()};
    if (o.layers) {
      run_layers(o, *model, dev, w, b, o.layers_json.empty() ? nullptr : &rows);
      continue;
    }
    if (dev.is_cpu()) {
      auto none = [] {};
      Row r;
      r.batch = b;
      r.fwd_ms = time_cpu([&] { w.forward(); }, none, o.warmup, o.repeats, &r.fwd_cpu_ms);
      r.step_ms = time_cpu([&] { w.step(); }, none, o.warmup, o.repeats, &r.step_cpu_ms);
      print_row(o, *model, dev, r);
      continue;
    }
#ifdef TRICK_WITH_CUDA
    std::vector<float> eager_grad;
    if (!o.graph || o.both) {
      Row r;
      r.batch = b;
      r.fwd_ms = time_cuda([&] { w.forward(); }, nullptr, o.warmup, o.repeats);
      // Warm-ups, not the loop: the first step allocates what the backward needs, the second
      // one block more (its input gradient is made while w.grad still holds the first's).
      w.step();
      w.step();
      const int64_t before = cuda_alloc_stats().mallocs;
      r.step_ms = time_cuda([&] { w.step(); }, nullptr, o.warmup, o.repeats);
      r.mallocs = cuda_alloc_stats().mallocs - before;
      if (o.both) eager_grad = w.grad.to_vector();
      print_row(o, *model, dev, r);
    }
    if (o.graph) {
      Row r;
      r.batch = b;
      r.graph = true;
      // One eager run of each first: handles, cuDNN plans and workspaces exist before the capture.
      w.forward();
      w.step();
      cuda::Graph g;
      // A failed capture ends the benchmark (the attack would run those steps eagerly): the
      // graph row asked for cannot be measured.
      auto capture = [&](const char* what, const std::function<void()>& body) {
        try {
          g.capture(dev, body);
        } catch (const Error& e) {
          fail(e.what(), " (capturing the ", what, " of batch ", b, " for the graph row; --no-graph times eager only)");
        }
      };
      capture("forward", [&] { w.forward(); });
      r.fwd_ms = time_cuda([&] { g.replay(); }, g.stream(), o.warmup, o.repeats);
      capture("attack step", [&] { w.step(); });
      r.nodes = g.nodes();
      const int64_t before = cuda_alloc_stats().mallocs;
      r.step_ms = time_cuda([&] { g.replay(); }, g.stream(), o.warmup, o.repeats);
      r.mallocs = cuda_alloc_stats().mallocs - before;
      if (o.both) {
        const std::vector<float> got = w.grad.to_vector();
        double worst = 0;
        for (size_t i = 0; i < got.size() && i < eager_grad.size(); ++i)
          worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - eager_grad[i]));
        r.graph_vs_eager = got.size() == eager_grad.size() ? worst : 1e30;  // sizes differ: never equal
        if (r.graph_vs_eager != 0)
          graph_differs += cat(graph_differs.empty() ? "" : ", ", "batch ", b, " (max |difference| ", r.graph_vs_eager, ")");
      }
      w.grad = Tensor();
      g.reset();
      print_row(o, *model, dev, r);
    }
#endif
  } catch (const std::bad_alloc&) {
    fail("out of memory: cannot allocate on the host while timing batch ", b, "; give a smaller --batch");
  } catch (const Error& e) {
    rethrow_out_of_memory(e, cat("timing batch ", b, " on ", dev.str()), dev, "give a smaller --batch");
  }
  if (!o.layers_json.empty()) {
    std::string text;
    for (const nlohmann::json& r : rows) text += r.dump() + "\n";
    atomic_write(o.layers_json, text);
  }
  // The same kernels on the same inputs, replayed or launched one by one: bit for bit equal.
  if (!graph_differs.empty())
    fail("--both: the input gradient from the CUDA graph differs from the eager one: ", graph_differs);
  return 0;
}

const bool registered = register_command(
    {"bench", "Time forward and forward + input gradient (median ms)",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("--weights", o->weights, "Weights file (.safetensors or .pth; default: random weights)");
       app.add_option("--model", o->model, "Architecture for random weights (inception_v3, fashion_inception)");
       app.add_option("--batch", o->batches, "Images per step; several sizes: --batch 1,64,256")->delimiter(',');
       app.add_option("--repeats", o->repeats, "Timed repeats (the median is printed)");
       app.add_option("--warmup", o->warmup, "Untimed repeats first");
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
       app.add_option("--device", o->device, "cpu, cuda or cuda:N");
       app.add_option("--seed", o->seed, "Seed of the random weights and input")->check(whole_number());
       app.add_flag("--repack-weights", o->repack,
                    "CPU: pack (and Winograd-transform) each layer's weights on every call instead of once, as "
                    "single passes do; the attack keeps them (the default here too)");
       add_backend_options(app, &o->graph);
       CLI::Option* both =
           app.add_flag("--both", o->both, "GPU: time eager and graph, and fail (exit 1, after the table) unless their input gradients are bit for bit equal");
       CLI::Option* layers = app.add_flag(
           "--layers", o->layers,
           "Time each layer of the step instead (forward and backward, eager on a GPU): a table in network order "
           "and one by kind of layer");
       layers->excludes(both);
       app.add_option("--layers-json", o->layers_json, "With --layers: also write its rows as JSON lines to this file")
           ->needs(layers);
       return [o] { return run(*o); };
     },
     80});

}  // namespace
}  // namespace trick::cmd_bench
