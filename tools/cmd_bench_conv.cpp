// trick bench-conv: the CPU convolution engines side by side on Inception v3's 3x3 stride-1
// layers (the ones Winograd can take; each row says which algorithm ran), forward and data
// gradient, with each engine's error against the same convolution summed in double.
//
// The engines run interleaved (every repeat times each engine once, in turn) and each time
// printed is the minimum over the repeats: on a shared machine other jobs only ever add time,
// so the minimum is the steadiest estimate of what the code costs, and interleaving spreads
// slow moments over all engines alike. `trick bench` (a whole step, medians) stays the measure
// of what a user waits for.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/sgemm_conv.h"
#include "kernels/cpu/sgemm_kernel.h"
#include "kernels/gemm.h"
#include "tensor/random.h"
#include "tools/command.h"
#include "tools/lib/run_model.h"

namespace trick::cmd_bench_conv {
namespace {

struct Options {
  std::vector<std::string> engines;  // empty: packed, winograd, winograd4 (blas without AVX2)
  std::vector<std::string> layers;   // empty: all of kLayers
  int batch = 1;
  int repeats = 20;
  int threads = 0;
  uint64_t seed = 0;
};

// Inception v3's 3x3 stride-1 convolutions at 299x299: input size, channels, padding, how many.
struct Layer {
  const char* name;
  int h, w, c, o, pad, count;
};
const Layer kLayers[] = {
    {"Conv2d_2a_3x3", 149, 149, 32, 32, 0, 1},
    {"Conv2d_2b_3x3", 147, 147, 32, 64, 1, 1},
    {"Conv2d_4a_3x3", 73, 73, 80, 192, 0, 1},
    {"Mixed_5b-6a.branch3x3dbl_2", 35, 35, 64, 96, 1, 4},
    {"Mixed_5b-5d.branch3x3dbl_3", 35, 35, 96, 96, 1, 3},
    {"Mixed_7b-7c.branch3x3dbl_2", 8, 8, 448, 384, 1, 2},
};

// The forward (bias, ReLU) and the data gradient of a 3x3 stride-1 convolution with padding
// `pad` on every side, summed in double, for the first image: the reference the errors are
// measured against (its cost does not grow with the batch).
std::vector<double> forward_ref(const Tensor& x, const Tensor& w, const Tensor& b, int pad) {
  const std::vector<float> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector();
  const int64_t n = 1, h = x.dim(1), wd = x.dim(2), c = x.dim(3), o = w.dim(0);
  const int64_t oh = h + 2 * pad - 2, ow = wd + 2 * pad - 2;
  std::vector<double> y(static_cast<size_t>(n * oh * ow * o));
  cpu::parallel_range(n * oh, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bi = r / oh, oy = r % oh;
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t k = 0; k < o; ++k) {
          double s = bv[k];
          for (int64_t i = 0; i < 3; ++i)
            for (int64_t j = 0; j < 3; ++j) {
              const int64_t iy = oy - pad + i, ix = ox - pad + j;
              if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
              const float* xp = &xv[((bi * h + iy) * wd + ix) * c];
              const float* wp = &wv[((k * 3 + i) * 3 + j) * c];
              for (int64_t ch = 0; ch < c; ++ch) s += static_cast<double>(xp[ch]) * wp[ch];
            }
          y[((bi * oh + oy) * ow + ox) * o + k] = s > 0 ? s : 0;
        }
    }
  });
  return y;
}

std::vector<double> dgrad_ref(const Tensor& dy, const Tensor& w, int pad, int64_t h, int64_t wd) {
  const std::vector<float> dv = dy.to_vector(), wv = w.to_vector();
  const int64_t n = 1, oh = dy.dim(1), ow = dy.dim(2), o = dy.dim(3), c = w.dim(3);
  std::vector<double> dx(static_cast<size_t>(n * h * wd * c), 0.0);
  cpu::parallel_range(n * h, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bi = r / h, iy = r % h;
      for (int64_t ix = 0; ix < wd; ++ix) {
        double* d = &dx[((bi * h + iy) * wd + ix) * c];
        for (int64_t i = 0; i < 3; ++i)
          for (int64_t j = 0; j < 3; ++j) {
            const int64_t oy = iy + pad - i, ox = ix + pad - j;
            if (oy < 0 || oy >= oh || ox < 0 || ox >= ow) continue;
            const float* g = &dv[((bi * oh + oy) * ow + ox) * o];
            for (int64_t k = 0; k < o; ++k) {
              const float* wp = &wv[((k * 3 + i) * 3 + j) * c];
              for (int64_t ch = 0; ch < c; ++ch) d[ch] += static_cast<double>(g[k]) * wp[ch];
            }
          }
      }
    }
  });
  return dx;
}

// Over the first ref.size() values of a (the first image).
double rel_l2(const Tensor& a, const std::vector<double>& ref) {
  const std::vector<float> x = a.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = x[i] - ref[i];
    num += d * d, den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// "" when `name` is one of kLayers, else the error: the names it could have been.
std::string layer_error(const std::string& name) {
  std::string names;
  for (const Layer& l : kLayers) {
    if (name == l.name) return "";
    names += std::string(names.empty() ? "" : ", ") + l.name;
  }
  return "'" + name + "' is not one of the layers timed here: " + names;
}

const char* algorithm_name(int tile) { return tile == 4 ? "F(4x4)" : tile == 2 ? "F(2x2)" : "direct"; }

int run(Options o) {
  if (o.engines.empty()) {
    if (cpu::sgemm::kernel_supported()) {
      o.engines = {"packed", "winograd", "winograd4"};
    } else {
      std::fprintf(stderr, "note: this CPU has no AVX2/FMA: only the blas engine runs here\n");
      o.engines = {"blas"};
    }
  }
  const cpu::ConvEngine saved = cpu::conv_engine();
  std::vector<cpu::ConvEngine> engines;
  for (const std::string& name : o.engines) {
    cpu::ConvEngine e = cpu::ConvEngine::Packed;
    TRICK_CHECK(cpu::parse_conv_engine(name, &e), "--engines: ", cpu_conv_error(name));
    TRICK_CHECK(e == cpu::ConvEngine::Blas || cpu::sgemm::kernel_supported(), "--engines: ", name,
                " needs AVX2 and FMA, which this CPU lacks");
    engines.push_back(e);
  }
  if (o.threads > 0) set_num_threads(o.threads);
  std::printf("Inception v3's 3x3 stride-1 convolutions, batch %d, %d threads, CPU; min ms of %d interleaved repeats\n",
              o.batch, num_threads(), o.repeats);
  std::printf("%-32s %-20s %-10s %-15s %9s %9s %7s %9s %9s\n", "layer", "shape", "engine", "fwd / bwd by", "fwd ms",
              "bwd ms", "x", "err fwd", "err bwd");
  Rng rng(o.seed);
  std::vector<double> total(engines.size(), 0.0);
  std::vector<std::pair<double, double>> worst(engines.size(), {0.0, 0.0});
  for (const Layer& l : kLayers) {
    if (!o.layers.empty() && std::find(o.layers.begin(), o.layers.end(), l.name) == o.layers.end()) continue;
    const Conv2dParams p = Conv2dParams::same(1, l.pad, l.pad, true);
    Tensor x = randn(Shape{o.batch, l.h, l.w, l.c}, rng), w = randn(Shape{l.o, 3, 3, l.c}, rng, 0.1f);
    Tensor b = randn(Shape{l.o}, rng);
    const Shape ys = conv2d_output_shape(x.shape(), w.shape(), p);
    Tensor dy = randn(ys, rng);
    const std::vector<double> y_ref = forward_ref(x, w, b, l.pad), dx_ref = dgrad_ref(dy, w, l.pad, l.h, l.w);

    std::vector<Tensor> ys_out, dxs_out;
    for (size_t e = 0; e < engines.size(); ++e) ys_out.push_back(Tensor::empty(ys)), dxs_out.push_back(Tensor::empty(x.shape()));
    std::vector<double> fwd(engines.size(), 1e300), bwd(engines.size(), 1e300);
    for (int r = -1; r < o.repeats; ++r)  // r = -1: a warm-up round
      for (size_t e = 0; e < engines.size(); ++e) {
        cpu::set_conv_engine(engines[e]);
        const auto t0 = std::chrono::steady_clock::now();
        conv2d_forward(x, w, b, p, ys_out[e]);
        const auto t1 = std::chrono::steady_clock::now();
        conv2d_dgrad(dy, w, p, dxs_out[e], false);
        const auto t2 = std::chrono::steady_clock::now();
        if (r < 0) continue;
        fwd[e] = std::min(fwd[e], std::chrono::duration<double, std::milli>(t1 - t0).count());
        bwd[e] = std::min(bwd[e], std::chrono::duration<double, std::milli>(t2 - t1).count());
      }
    char shape[64];
    std::snprintf(shape, sizeof(shape), "%dx%dx%d -> %d", l.h, l.w, l.c, l.o);
    const std::string name = std::string(l.name) + (l.count > 1 ? " (x" + std::to_string(l.count) + ")" : "");
    for (size_t e = 0; e < engines.size(); ++e) {
      const double ef = rel_l2(ys_out[e], y_ref), eb = rel_l2(dxs_out[e], dx_ref);
      const std::string by =
          std::string(algorithm_name(cpu::winograd_tile_for(engines[e], 3, 3, p, l.c, o.batch, ys[1], ys[2]))) + " / " +
          algorithm_name(cpu::winograd_tile_for(engines[e], 3, 3, p, l.o, o.batch, l.h, l.w));
      std::printf("%-32s %-20s %-10s %-15s %9.3f %9.3f %7.2f %9.1e %9.1e\n", e ? "" : name.c_str(), e ? "" : shape,
                  o.engines[e].c_str(), by.c_str(), fwd[e], bwd[e], (fwd[0] + bwd[0]) / (fwd[e] + bwd[e]), ef, eb);
      total[e] += l.count * (fwd[e] + bwd[e]);
      worst[e] = {std::max(worst[e].first, ef), std::max(worst[e].second, eb)};
    }
  }
  std::printf("\n%s (each layer times its count), forward + data gradient:\n",
              o.layers.empty() ? "all of them" : "the layers above");
  std::printf("%-10s %9s %7s %17s %9s\n", "engine", "ms", "x", "largest err fwd", "bwd");
  for (size_t e = 0; e < engines.size(); ++e)
    std::printf("%-10s %9.3f %7.2f %17.1e %9.1e\n", o.engines[e].c_str(), total[e], total[0] / total[e], worst[e].first,
                worst[e].second);
  std::printf("x: forward + data gradient against %s (> 1: faster); err: relative L2 against the sum in double "
              "(first image)\n",
              o.engines[0].c_str());
  cpu::set_conv_engine(saved);
  return 0;
}

const bool registered = register_command(
    {"bench-conv",
     "Time the CPU convolution engines on Inception's 3x3 layers, interleaved (min ms), with their errors",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("--engines", o->engines,
                      "CPU engines to compare, the first the baseline (default packed,winograd,winograd4; blas alone on "
                      "CPUs without AVX2)")
           ->delimiter(',')
           ->check([](const std::string& v) { return cpu_conv_error(v); });
       app.add_option("--layers", o->layers, "Only these layers, by the names printed (default: all six)")
           ->delimiter(',')
           ->check([](const std::string& v) { return layer_error(v); });
       app.add_option("--batch", o->batch, "Images per convolution")->check(CLI::Range(1, 64));
       app.add_option("--repeats", o->repeats, "Timed repeats (the minimum is printed)")->check(CLI::Range(1, 100000));
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
       app.add_option("--seed", o->seed, "Seed of the random weights and inputs")->check(whole_number());
       return [o] { return run(*o); };
     },
     81});

}  // namespace
}  // namespace trick::cmd_bench_conv
