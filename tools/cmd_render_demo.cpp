// trick render-demo (hidden, for looking at the pictures): renders a synthetic "attack" (a
// made-up image drifting inside an epsilon ball while made-up probabilities move from a source
// class to the target) through the same frame, GIF, perturbation and report code the attack
// command uses, so the output can be judged without a model or a GPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "models/labels.h"
#include "tensor/random.h"
#include "tools/command.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/gif.h"
#include "tools/lib/render.h"
#include "tools/lib/report.h"

namespace trick::cmd_render_demo {
namespace {

struct DemoArgs {
  std::string out;
  int classes = 1000;
  int steps = 60;
  int size = 299;
  int max_frames = 40;
  bool gray = false;
  bool all_pngs = false;  // every drawn frame as frame_<step>.png, not only first/middle/last
  int width = 960, height = 720;
};

// A picture with smooth areas, edges and colours, so scaling and the palette are exercised.
std::vector<float> synthetic_image(int h, int w, int c) {
  std::vector<float> v(static_cast<size_t>(h) * w * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float fx = (x + 0.5f) / w, fy = (y + 0.5f) / h;
      const float r2 = (fx - 0.55f) * (fx - 0.55f) + (fy - 0.45f) * (fy - 0.45f);
      const bool disc = r2 < 0.09f;
      const bool bar = std::fabs(fx - 0.3f) < 0.08f && fy > 0.2f;
      float rgb[3] = {0.25f + 0.5f * fy, 0.55f - 0.3f * fx, 0.85f - 0.4f * fy};
      if (disc) rgb[0] = 0.95f, rgb[1] = 0.75f - 2 * r2, rgb[2] = 0.2f;
      if (bar) rgb[0] = rgb[1] = rgb[2] = 0.15f + 0.1f * fy;
      for (int k = 0; k < c; ++k)
        v[(static_cast<size_t>(y) * w + x) * c + k] = c == 3 ? rgb[k] : (rgb[0] + rgb[1] + rgb[2]) / 3;
    }
  return v;
}

std::vector<std::string> demo_labels(int k) {
  const std::vector<std::string>& lines = k == 10 ? fashion_mnist_classes() : imagenet_classes();
  std::vector<std::string> out;
  for (int i = 0; i < k; ++i) out.push_back(i < static_cast<int>(lines.size()) ? short_label(lines[i]) : cat("class ", i));
  return out;
}

int run_demo(const DemoArgs& a) {
  TRICK_CHECK(a.classes >= 2 && a.steps >= 1 && a.size >= 1, "render-demo: need >= 2 classes, >= 1 step, size >= 1");
  ensure_directory(a.out);
  const int h = a.gray ? 28 : a.size, w = a.gray ? 28 : a.size * 4 / 3, c = a.gray ? 1 : 3;
  const int K = a.classes, source = K == 10 ? 1 : 281, target = K == 10 ? 8 : std::min(341, K - 1);
  const std::vector<std::string> labels = demo_labels(K);
  const float eps = 8.f / 255, alpha = 1.f / 255;

  Rng rng(7);
  const std::vector<float> x0 = synthetic_image(h, w, c);
  std::vector<float> x = x0, prev = x0;
  std::vector<float> base(K), loss;
  for (float& v : base) v = rng.normal() * 1.5f;
  const auto t0 = std::chrono::steady_clock::now();

  RenderOptions ro;
  ro.width = a.width;
  ro.height = a.height;
  ro.delta_scale_255 = alpha * 255;
  const std::vector<int> picked = pick_frames(a.steps, a.max_frames);
  GifWriter gif(a.out + "/animation.gif", ro.width, ro.height);
  std::vector<float> target_probs;
  std::vector<float> probs(K);
  auto top5 = [&](const std::vector<float>& p) {
    std::vector<int> idx(K);
    for (int i = 0; i < K; ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + std::min(5, K), idx.end(), [&](int i, int j) { return p[i] > p[j]; });
    std::vector<ReportClass> out;
    for (int i = 0; i < std::min(5, K); ++i) out.push_back({idx[i], labels[idx[i]], p[idx[i]]});
    return out;
  };
  std::vector<ReportClass> top5_original;
  size_t next_pick = 0;
  for (int step = 0; step <= a.steps; ++step) {
    if (step > 0) {  // a fake signed step inside the eps ball
      prev = x;
      for (size_t i = 0; i < x.size(); ++i) {
        const float s = rng.uniform() < 0.5f ? -alpha : alpha;
        x[i] = std::clamp(std::clamp(x[i] + s, x0[i] - eps, x0[i] + eps), 0.f, 1.f);
      }
    }
    const float t = static_cast<float>(step) / a.steps, mix = t * t * (3 - 2 * t);
    float mx = -INFINITY, sum = 0;
    for (int k = 0; k < K; ++k) {
      probs[k] = base[k] + (k == source ? 9.f * (1 - mix) : 0.f) + (k == target ? 12.f * mix : 0.f) +
                 0.3f * rng.normal();
      mx = std::max(mx, probs[k]);
    }
    for (float& v : probs) sum += (v = std::exp(v - mx));
    for (float& v : probs) v /= sum;
    loss.push_back(-std::log(std::max(probs[target], 1e-30f)));
    target_probs.push_back(probs[target]);
    if (step == 0) top5_original = top5(probs);
    if (next_pick < picked.size() && picked[next_pick] == step) {
      ++next_pick;
      FrameInfo f;
      f.step = step;
      f.total_steps = a.steps;
      f.image = Tensor::from_vector({h, w, c}, x);
      if (step > 0) {
        std::vector<float> d(x.size());
        for (size_t i = 0; i < x.size(); ++i) d[i] = x[i] - prev[i];
        f.delta = Tensor::from_vector({h, w, c}, d);
      }
      f.probs = probs;
      f.target = target;
      f.target_label = labels[target];
      f.top1 = static_cast<int>(std::max_element(probs.begin(), probs.end()) - probs.begin());
      f.top1_label = labels[f.top1];
      f.loss_history = loss;
      f.loss_name = "cross-entropy to target";
      f.method = "I-FGSM (demo)";
      f.epsilon_255 = eps * 255;
      double linf = 0, l2 = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        const double d = (x[i] - x0[i]) * 255.0;
        linf = std::max(linf, std::fabs(d));
        l2 += d * d;
      }
      f.linf_255 = static_cast<float>(linf);
      f.l2_255 = static_cast<float>(std::sqrt(l2));
      const Rgb8Image frame = render_frame(f, ro);
      gif.add_frame(frame);
      if (a.all_pngs || step == 0 || step == picked[picked.size() / 2] || step == a.steps)
        save_rgb8_png(cat(a.out, "/frame_", step, ".png"), frame);
    }
  }
  gif.finish();
  const Tensor orig = Tensor::from_vector({h, w, c}, x0), adv = Tensor::from_vector({h, w, c}, x);
  std::vector<float> d(x.size());
  for (size_t i = 0; i < x.size(); ++i) d[i] = x[i] - x0[i];
  double linf = 0, l2 = 0;
  for (float v : d) {
    linf = std::max(linf, std::fabs(v * 255.0));
    l2 += v * 255.0 * v * 255.0;
  }
  float scale = 0;
  save_rgb8_png(a.out + "/perturbation.png", render_perturbation(Tensor::from_vector({h, w, c}, d), &scale));
  save_rgb8_png(a.out + "/original.png", rgb8_from_tensor(orig));
  save_rgb8_png(a.out + "/adversarial.png", rgb8_from_tensor(adv));

  ReportInfo r;
  r.input_name = "synthetic <demo> & \"image\"";
  r.image_width = w;
  r.image_height = h;
  r.model = "none (synthetic probabilities)";
  r.weights_hash = "-";
  r.method = "I-FGSM (demo)";
  r.settings = {{"epsilon", "8/255"}, {"step size", "1/255"}, {"loss", "cross-entropy to target"}};
  r.target = {target, labels[target], probs[target]};
  r.top5_original = top5_original;
  r.top5_final = top5(probs);
  r.success = r.success_8bit = r.top5_final[0].index == target;
  r.steps = r.max_steps = a.steps;
  r.target_prob_history = target_probs;
  r.loss_history = loss;
  r.perturbation_scale_255 = scale;
  r.linf_255 = static_cast<float>(linf);
  r.l2_255 = static_cast<float>(std::sqrt(l2));
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.device = "cpu";
  r.generated_by = "trick render-demo";
  write_report(a.out + "/index.html", r);
  std::printf("%s: %zu frames in animation.gif, perturbation.png: \u00b1%.3g/255 mapped to full colour, %.2f s\n",
              a.out.c_str(), picked.size(), scale, r.wall_seconds);
  return 0;
}

const bool registered = register_command({"render-demo", "Render a synthetic attack animation (debugging aid)",
                                          [](CLI::App& app) {
                                            app.group("");  // hidden from --help
                                            auto args = std::make_shared<DemoArgs>();
                                            app.add_option("--out", args->out, "output folder")->required();
                                            app.add_option("--classes", args->classes, "number of classes");
                                            app.add_option("--steps", args->steps, "steps");
                                            app.add_option("--size", args->size, "image height");
                                            app.add_option("--max-frames", args->max_frames, "frames in the GIF");
                                            app.add_option("--width", args->width, "frame width");
                                            app.add_option("--height", args->height, "frame height");
                                            app.add_flag("--gray", args->gray, "28x28 grey image, 10 classes");
                                            app.add_flag("--all-pngs", args->all_pngs, "save every frame as PNG");
                                            return [args] {
                                              if (args->gray) args->classes = 10;
                                              return run_demo(*args);
                                            };
                                          },
                                          900});

}  // namespace
}  // namespace trick::cmd_render_demo
