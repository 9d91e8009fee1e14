// trick attack IMAGE... --target T [--weights W] [--method M] [--eps E] [--step S] [--steps N]
//              [--confidence C] [--out DIR] [--json] ...
// trick attack --manifest jobs.csv --out DIR [--shard i/N] [settings...]: many jobs, resumable.
// Runs the attack (attack/), streams the four-panel animation while it runs, and writes the
// outputs (tools/lib/attack_outputs.h). eps and step are in 8-bit units (--eps 4 = 4/255).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <new>
#include <cstdio>
#include <fstream>
#include <map>
#include <utility>
#include <nlohmann/json.hpp>

#include "attack/attack.h"
#include "kernels/backend.h"
#include "kernels/cpu/sgemm_conv.h"
#include "kernels/gemm.h"
#include "kernels/pointwise.h"
#include "models/labels.h"
#include "tools/command.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/attack_outputs.h"
#include "tools/lib/gif.h"
#include "tools/lib/image.h"
#include "tools/lib/manifest.h"
#include "tools/lib/render.h"
#include "tools/lib/run_model.h"
#include "tensor/random.h"

namespace trick::cmd_attack {
namespace {

volatile sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

struct Options {
  std::vector<std::string> images, targets;
  std::string weights, method = "pgd", norm = "linf", out = "trick-out", device = "auto", input_size;
  std::string true_class;
  float eps = 8.f, step = 1.f, confidence = 0.99f, momentum = 1.f, kappa = 0.f, cw_c = 1.f, cw_lr = 0.01f;
  int steps = 300, restarts = 1, cw_search = 5, refine_steps = 50, frames = 100, threads = 0;
  int frame_width = 960;
  bool json = false, untargeted = false, random_start = false, no_random_start = false, no_animation = false;
  uint64_t seed = 0;
  bool graph = true;  // --graph / --no-graph: the steps from one CUDA graph on a GPU
  bool eps_given = false;  // --eps or a manifest row's eps: the L2 ball has no default size
  bool step_given = false; // --step or a manifest row's step (else the method's default)
  std::string manifest, shard;  // --manifest jobs.csv [--shard i/N] (tools/lib/manifest.h)
  nlohmann::json manifest_row;  // a manifest row's fingerprint (row_fingerprint), into summary.json
  std::string command_line;
};

// Renders the animation of one item as its steps arrive.
struct Animator {
  std::unique_ptr<GifWriter> gif;
  std::vector<int> picked;  // sequence numbers to draw
  size_t next = 0;
  int seq = 0;              // steps seen (across restarts and refinement)
  int factor = 1;           // frames see the image reduced by this (frame_factor)
  Tensor previous;          // the previous step's image, sampled (sample_nearest): the delta panel's base
  std::vector<float> losses;
};

// How much a frame's panels may see the image reduced: a panel is at most half the frame's
// width, so keeping at least the frame's width of pixels on the shorter side loses nothing
// the frame shows. A 4000x3000 photo in a 960-pixel animation: 3 (1333x1000).
int frame_factor(const Tensor& image, int frame_width) {
  const int64_t shorter = std::min(image.dim(0), image.dim(1));
  return static_cast<int>(std::max<int64_t>(1, shorter / std::max(1, frame_width)));
}

// summary.json's "backend": the settings besides the device that change the last bits (or
// the speed) of a run, so that a result can be reproduced exactly; on a GPU also how many of
// the trace's steps were replayed from a CUDA graph (the others ran eagerly: the first of
// each set of running images, a method that reads a value on the host, a failed capture),
// and why a capture failed, if one did (null if none did).
nlohmann::json backend_json(Device dev, bool graph, const ItemResult& r) {
  if (dev.is_cpu()) {
    nlohmann::json j{{"conv", cpu::conv_engine_key(cpu::conv_engine())}, {"kernels", cpu::conv_engine_name()},
                     {"threads", num_threads()}};
    // tf32/bf16 on the CPU: emulated (kernels/cpu/tensor_core_emulation.h)
    if (math_mode() != MathMode::FP32) j["math"] = cat(math_mode_name(math_mode()), " (emulated)");
    return j;
  }
  const auto replayed = std::count_if(r.trace.begin(), r.trace.end(), [](const StepRecord& t) { return t.from_graph; });
  return {{"conv", conv_backend_name(conv_backend())},
          {"math", math_mode_name(math_mode())},
          {"cuda_graph", graph},
          {"cuda_graph_steps", replayed},
          {"cuda_graph_failure", r.graph_failure.empty() ? nlohmann::json() : nlohmann::json(r.graph_failure)}};
}

// The image (H, W, C) on the host, read in place when it already is there.
Tensor host_contiguous(const Tensor& image) {
  return image.device().is_cpu() && image.is_contiguous() ? image : image.to(Device::cpu()).contiguous();
}

// (H / f, W / f, C) on the host, element (y, x, k) = value(pixel, y, x, k), where pixel(py,
// px, k) reads the image at full size.
template <class F>
Tensor per_block(const Tensor& image, int f, F value) {
  const Tensor src = host_contiguous(image);
  const int64_t h = src.dim(0) / f, w = src.dim(1) / f, c = src.dim(2), W = src.dim(1);
  const float* in = src.data();
  auto pixel = [&](int64_t py, int64_t px, int64_t k) { return in[(py * W + px) * c + k]; };
  Tensor out = Tensor::empty(Shape{h, w, c});
  float* o = out.data();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < c; ++k) o[(y * w + x) * c + k] = value(pixel, y, x, k);
  return out;
}

// The image averaged over f x f blocks: what the image panel's smooth shrinking would
// average anyway (f = 1: a copy).
Tensor reduce_box(const Tensor& image, int f) {
  const float inv = 1.f / static_cast<float>(f * f);
  return per_block(image, f, [f, inv](auto&& pixel, int64_t y, int64_t x, int64_t k) {
    float sum = 0.f;
    for (int dy = 0; dy < f; ++dy)
      for (int dx = 0; dx < f; ++dx) sum += pixel(y * f + dy, x * f + dx, k);
    return sum * inv;
  });
}

// The centre pixel of each f x f block: the delta panel shows sampled pixels, not averages
// (averaging would turn +-1/255 noise into a flat grey), so the change between two steps'
// samples is the sampled change.
Tensor sample_nearest(const Tensor& image, int f) {
  return per_block(image, f, [f](auto&& pixel, int64_t y, int64_t x, int64_t k) {
    return pixel(y * f + f / 2, x * f + f / 2, k);
  });
}

std::string short_name(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  const size_t dot = base.find_last_of('.');
  if (dot != std::string::npos && dot > 0) base = base.substr(0, dot);
  std::string out;
  for (char c : base) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  return out.empty() ? "image" : out;
}

// The attack settings from the options (validated; errors name the option).
AttackSettings settings_of(Options& o) {
  AttackSettings s;
  s.method = parse_attack_method(o.method);
  s.ball = parse_ball(o.norm);
  s.targeted = !o.untargeted;
  // 8 levels is a usual L-inf budget; as an L2 norm over a whole image it is next to nothing
  // (published ImageNet L2 budgets are 0.5 to 3 in [0, 1] units at 224x224, 128 to 765
  // levels), and it grows with the resolution, so L2 has no default: the user picks it.
  TRICK_CHECK(o.eps_given || s.ball != Ball::L2,
              "--norm l2 needs --eps: the L2 norm of the change over the whole image, in 8-bit units "
              "(e.g. --eps 765 is 3.0 in [0, 1] units), at the image's own resolution");
  // cw has no budget: it minimises the L2 norm of the change itself. An --eps it ignored
  // would be recorded in summary.json as if it had bounded the result.
  TRICK_CHECK(!o.eps_given || s.method != AttackMethod::Cw,
              "--eps is not used by --method cw: it has no budget, it minimises the L2 norm of the change "
              "(the result's norms are in summary.json); drop --eps, or use pgd for a bounded attack");
  TRICK_CHECK(s.method == AttackMethod::Cw || !(o.eps <= 0.f),
              "--eps must be positive (8-bit units), got ", o.eps, ": with no budget nothing can change");
  s.eps = o.eps / 255.f;
  if (!o.step_given) o.step = s.method == AttackMethod::Fgsm ? o.eps : (s.ball == Ball::L2 ? o.eps / 10.f : 1.f);
  s.step = o.step / 255.f;
  s.steps = s.method == AttackMethod::Fgsm ? 1 : o.steps;
  s.confidence = o.confidence;
  s.random_start = o.random_start || (s.method == AttackMethod::Pgd && !o.no_random_start);
  s.restarts = o.restarts;
  s.momentum = o.momentum;
  s.kappa = o.kappa;
  s.cw_c = o.cw_c;
  s.cw_search = o.cw_search;
  s.cw_lr = o.cw_lr;
  s.refine_steps = o.refine_steps;
  s.raw_input = parse_input_size(o.input_size);
  s.seed = o.seed;
  s.cuda_graph = o.graph;
  validate(s);
  TRICK_CHECK(o.frames >= 2 && o.frames <= 2000, "--frames must be in [2, 2000], got ", o.frames);
  // render_frame's limits (480x360 .. 8192x8192 at 4:3), checked before any work.
  TRICK_CHECK(o.frame_width >= 480 && o.frame_width <= 8192, "--frame-width must be in [480, 8192], got ",
              o.frame_width);
  TRICK_CHECK(!o.targets.empty() || o.untargeted, "--target is required (or --untargeted)");
  TRICK_CHECK(o.targets.empty() || !o.untargeted, "--untargeted takes no --target (use --true-class)");
  return s;
}

// The SHA-256 of the weights the summaries name, computed once, when first asked for:
// after the targets, images and output folders were checked, because hashing Inception's
// 100 MB takes longer than finding a bad --target (3 s of a 4 s error under the sanitizers).
class WeightsHash {
 public:
  explicit WeightsHash(std::string path) : path_(std::move(path)) {}
  const std::string& get() {
    if (value_.empty()) value_ = path_.empty() ? default_model_sha256() : sha256_file(path_);
    return value_;
  }

 private:
  std::string path_, value_;
};

// Attacks o.images toward o.targets with `model` and writes the outputs under o.out.
// 0: every image reached its target; 3: some did not.
// DIR/results.csv and DIR/index.html (an overview linking every attack's own page) for
// several attacks, from what is on disk.
ManifestCounts write_overview(const std::string& out, const std::vector<ManifestRow>& rows, const std::string& title) {
  write_batch_index(out, rows, title);
  return write_results(out, rows);
}

// `files`: o.images, read ahead.
int attack_images(const Options& o, const AttackSettings& s, Model& model, Device dev, WeightsHash& weights_hash,
                  ImageFiles& files) {
  const std::vector<std::string>& names = model.class_names();

  // Pair images with labels: one target for all images, one image for all targets, or one each.
  std::vector<std::string> paths;
  std::vector<int> labels;
  std::vector<int> resolved;
  // Class errors name the option, like every other bad argument.
  auto resolve = [&](const std::string& option, const std::string& query) {
    try {
      return resolve_class(query, names);
    } catch (const Error& e) {
      fail(option, ": ", e.what());
    }
  };
  // Two targets chosen per image from the model's own prediction on it (resolved below,
  // once the images are read): the least likely class, and a random class other than the
  // predicted one (seeded by --seed and the image's position: reproducible).
  constexpr int kLeastLikely = -1, kRandomTarget = -2;
  for (const std::string& t : o.targets) {
    const TargetRule rule = target_rule(t);
    resolved.push_back(rule == TargetRule::LeastLikely ? kLeastLikely
                       : rule == TargetRule::Random    ? kRandomTarget
                                                       : resolve("--target", t));
  }
  if (!o.untargeted) {
    if (resolved.size() == 1 || resolved.size() == o.images.size()) {
      for (size_t i = 0; i < o.images.size(); ++i)
        paths.push_back(o.images[i]), labels.push_back(resolved[resolved.size() == 1 ? 0 : i]);
    } else if (o.images.size() == 1) {
      for (int t : resolved) paths.push_back(o.images[0]), labels.push_back(t);
    } else {
      fail("--target given ", resolved.size(), " times for ", o.images.size(),
           " images: give one target for all, one per image, or several for one image");
    }
  } else {
    paths = o.images;
  }
  std::map<std::string, Tensor> decoded;
  std::vector<Tensor> originals;
  for (const std::string& p : paths) {
    if (!decoded.count(p)) {
      const DecodedImage file = files.take(p);
      decoded[p] = image_tensor(file, model.input_channels());
      if (model.input_channels() == 1 && file.in_colour())  // a colour photo becomes gray: say so, the output is too
        std::fprintf(stderr, "note: %s is in colour; the model (%s) takes gray images, so it is attacked and saved "
                     "in gray (converted as PIL's convert(\"L\"))\n", p.c_str(), model.name().c_str());
      if (s.raw_input)
        TRICK_CHECK(decoded[p].dim(0) == model.input_height() && decoded[p].dim(1) == model.input_width(), p,
                    ": --input-size raw needs a ", model.input_width(), "x", model.input_height(), " image, got ",
                    decoded[p].dim(1), "x", decoded[p].dim(0));
    }
    originals.push_back(decoded[p]);
  }
  // The model's prediction on the originals, made once and only when a target or true class
  // is chosen from it.
  std::vector<std::vector<float>> p0;
  auto prediction = [&](size_t i) -> const std::vector<float>& {
    if (p0.empty()) p0 = predict(model, originals, s.raw_input);
    return p0[i];
  };
  std::vector<std::string> chosen(paths.size()), chosen_by(paths.size());  // how a target was chosen
  if (std::any_of(labels.begin(), labels.end(), [](int l) { return l < 0; })) {
    for (size_t i = 0; i < paths.size(); ++i) {
      if (labels[i] >= 0) continue;
      const std::vector<float>& p = prediction(i);
      const int top = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
      if (labels[i] == kLeastLikely) {
        labels[i] = static_cast<int>(std::min_element(p.begin(), p.end()) - p.begin());
        chosen[i] = cat(" (least likely: ", p[labels[i]], ")");
        chosen_by[i] = "least-likely";
      } else {
        Rng pick(s.seed * 0x9E3779B97F4A7C15ull + i + 1);
        const int k = static_cast<int>(p.size());
        const int r = static_cast<int>(pick.below(k - 1));
        labels[i] = r >= top ? r + 1 : r;  // any class but the predicted one
        chosen[i] = cat(" (random, seed ", s.seed, ")");
        chosen_by[i] = "random";
      }
    }
  }
  if (o.untargeted) {  // the true class: given, or the model's own prediction
    for (size_t i = 0; i < paths.size(); ++i) {
      if (!o.true_class.empty()) {
        labels.push_back(resolve("--true-class", o.true_class));
      } else {
        const std::vector<float>& p = prediction(i);
        labels.push_back(static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin()));
      }
    }
  }
  for (size_t i = 0; i < paths.size(); ++i)
    std::fprintf(stderr, "%s: %s %d (%s)%s\n", paths[i].c_str(), o.untargeted ? "moving away from" : "target",
                 labels[i], names[labels[i]].c_str(), chosen[i].c_str());

  // Output folders: DIR itself for one image, DIR/NN-name-to-label for several. Folders this
  // run creates are removed again if it fails before writing its outputs (declared before
  // the animations, so their temporary files are gone by then).
  struct NewFolders {
    std::vector<std::string> made;
    bool keep = false;
    void ensure(const std::string& dir) {
      struct stat st;
      const bool existed = ::stat(dir.c_str(), &st) == 0;
      ensure_directory(dir);  // one that exists must be a writable folder: said now, not after the attack
      if (!existed) made.push_back(dir);
    }
    ~NewFolders() {
      if (!keep)
        for (auto it = made.rbegin(); it != made.rend(); ++it) ::rmdir(it->c_str());  // only if empty
    }
  } folders;
  folders.ensure(o.out);
  std::vector<std::string> dirs;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (paths.size() == 1) {
      dirs.push_back(o.out);
    } else {
      char prefix[24];
      std::snprintf(prefix, sizeof prefix, "%02zu", i);
      dirs.push_back(cat(o.out, "/", prefix, "-", short_name(paths[i]), "-",
                         short_name(class_label(names, labels[i]))));
      folders.ensure(dirs.back());
    }
  }

  const std::string& weights_sha256 = weights_hash.get();
  std::vector<AttackItem> items;
  for (size_t i = 0; i < paths.size(); ++i) items.push_back({originals[i], labels[i]});

  // The animation: every step of the first half of the frames (runs usually stop early),
  // then evenly spaced steps of the rest of the budget, plus the last step taken.
  const int runs = s.method == AttackMethod::Cw ? s.cw_search : s.restarts;
  const int budget = (s.steps + 1) * runs;
  std::vector<Animator> anim(items.size());
  RenderOptions ropt;
  ropt.width = o.frame_width;
  ropt.height = o.frame_width * 3 / 4;
  // A frame from the step's image reduced for the panels (reduce_box), and its sampled
  // pixels with those of the step before (sample_nearest; undefined at the first step).
  auto frame_of = [&](size_t i, const StepRecord& r, const Tensor& reduced, const Tensor& sampled,
                      const Tensor& before, const std::vector<float>& probs, int seq) {
    Animator& a = anim[i];
    FrameInfo f;
    f.step = seq;
    f.total_steps = std::max(budget - 1, seq);
    f.image = reduced;
    if (before.defined()) {
      f.delta = Tensor::empty(sampled.shape());
      binary(BinaryOp::Sub, sampled, before, f.delta);
    }
    f.probs = probs;
    f.target = labels[i];
    f.top1 = r.top1.index;
    f.target_label = class_label(names, labels[i]);
    f.top1_label = class_label(names, r.top1.index);
    f.loss_history = a.losses;
    f.loss_name = s.method == AttackMethod::Cw ? "C&W objective"
                  : s.targeted                 ? "cross-entropy to target"
                                               : "minus cross-entropy of true class";
    f.method = attack_method_name(s.method);
    f.epsilon_255 = s.method == AttackMethod::Cw || s.ball == Ball::L2 ? 0.f : s.eps * 255.f;
    f.linf_255 = r.linf;
    f.l2_255 = r.l2;
    if (!s.targeted) f.target = -1;
    return render_frame(f, ropt);
  };
  if (!o.no_animation)
    for (size_t i = 0; i < items.size(); ++i) {
      anim[i].factor = frame_factor(items[i].image, ropt.width);
      anim[i].picked = pick_frames_front(budget - 1, o.frames);
      anim[i].gif = std::make_unique<GifWriter>(dirs[i] + "/animation.gif", ropt.width, ropt.height);
    }

  const bool tty = isatty(2);
  auto last_print = std::chrono::steady_clock::now();
  struct Last {
    StepRecord r;
    Tensor reduced, sampled, before;  // as frame_of takes them; reduced only when not drawn
    std::vector<float> probs;
    int seq = -1;
    bool drawn = false;
  };
  std::vector<Last> last(items.size());
  auto observer = [&](const StepView& v) {
    if (g_interrupted) fail("interrupted");
    const size_t i = static_cast<size_t>(v.item);
    Animator& a = anim[i];
    const int seq = a.seq++;
    a.losses.push_back(static_cast<float>(v.record->loss));
    if (!o.no_animation) {
      const bool pick = a.next < a.picked.size() && a.picked[a.next] <= seq;
      Tensor sampled = sample_nearest(*v.image, a.factor);
      if (pick) {
        while (a.next < a.picked.size() && a.picked[a.next] <= seq) ++a.next;
        a.gif->add_frame(frame_of(i, *v.record, reduce_box(*v.image, a.factor), sampled, a.previous, *v.probs, seq));
      }
      last[i] = {*v.record, pick ? Tensor() : reduce_box(*v.image, a.factor), sampled, a.previous, *v.probs, seq, pick};
      a.previous = std::move(sampled);
    }
    if (tty) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_print > std::chrono::milliseconds(100)) {
        last_print = now;
        const StepRecord& r = *v.record;
        std::fprintf(stderr, "\r\033[K[%zu/%zu] %s step %d  loss %.4f  %s %.4f  top-1 %s (%.3f)", i + 1, items.size(),
                     r.refine ? "refine" : "", r.step, r.loss, s.targeted ? "target" : "true", r.label_prob,
                     class_label(names, r.top1.index).c_str(), r.top1.prob);
        std::fflush(stderr);
      }
    }
  };

  g_interrupted = 0;
  struct sigaction sa {}, old {};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, &old);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<ItemResult> results;
  try {
    try {
      results = run_attack(model, items, s, observer);
    } catch (const std::bad_alloc&) {
      fail("out of memory: cannot allocate on the host");
    }
  } catch (const Error& e) {
    sigaction(SIGINT, &old, nullptr);
    if (tty) std::fprintf(stderr, "\n");
    if (g_interrupted)
      fail("interrupted (Ctrl-C): nothing was written; earlier outputs in ", o.out, " are unchanged");
    rethrow_out_of_memory(e, cat("attacking a batch of ", items.size(), " image", items.size() == 1 ? "" : "s", " (",
                                 model.input_width(), "x", model.input_height(), " on ", dev.str(), ")"),
                          dev, "attack fewer images per run (split the command, or use --manifest, which attacks "
                               "one row at a time)");
  }
  folders.keep = true;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tty) std::fprintf(stderr, "\r\033[K");
  // A failed capture costs speed, not results: said once, and in each summary.json.
  for (const ItemResult& r : results)
    if (!r.graph_failure.empty()) {
      std::fprintf(stderr, "note: some steps ran eagerly, not from a CUDA graph: %s\n", r.graph_failure.c_str());
      break;
    }

  // Writing the outputs: Ctrl-C waits until they are complete.
  sigset_t block, previous;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigprocmask(SIG_BLOCK, &block, &previous);
  sigaction(SIGINT, &old, nullptr);
  for (size_t i = 0; i < items.size(); ++i) {
    if (!o.no_animation) {
      // The final state, if the evenly spaced picks missed it.
      if (last[i].seq >= 0 && !last[i].drawn) {
        Animator& a = anim[i];
        a.losses.resize(static_cast<size_t>(last[i].seq) + 1);
        a.gif->add_frame(
            frame_of(i, last[i].r, last[i].reduced, last[i].sampled, last[i].before, last[i].probs, last[i].seq));
      }
      anim[i].gif->finish();
    }
    AttackRecord rec;
    rec.dir = dirs[i];
    rec.image_path = paths[i];
    rec.original = originals[i];
    rec.result = &results[i];
    rec.label = labels[i];
    rec.chosen_by = chosen_by[i];
    rec.class_names = &names;
    rec.model_name = model.name();
    rec.weights = o.weights.empty() ? "embedded" : o.weights;
    rec.weights_sha256 = weights_sha256;
    rec.device = dev.str();
    rec.backend = backend_json(dev, o.graph, results[i]);
    rec.settings = s;
    rec.wall_seconds = wall;
    rec.command_line = o.command_line;
    rec.animation = !o.no_animation;
    rec.manifest_row = o.manifest_row;
    const float scale = write_attack_outputs(rec);
    const ItemResult& r = results[i];
    if (o.json) {
      std::printf("%s\n", summary_json(rec).dump().c_str());
    } else {
      const std::vector<float>& p = r.final_probs;
      const int top = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
      // Targeted: "a.png -> Pig: ..."; untargeted: "a.png away from Trouser: ..." (the true class).
      // With restarts or cw's rounds: which run the result is from (its steps are that run's).
      const std::string of_run = runs > 1 ? cat(" of run ", r.best_run + 1, "/", runs) : std::string();
      std::printf("%s %s %s: %s after %d steps%s (float %s, 8-bit %s%s); now %s %.4f, top-1 %s (%.4f)\n",
                  paths[i].c_str(), s.targeted ? "->" : "away from", class_label(names, labels[i]).c_str(),
                  r.success_8bit ? "success" : "no success", r.steps, of_run.c_str(), r.success_float ? "yes" : "no",
                  r.success_8bit ? "yes" : "no", r.refined ? ", refined" : "", s.targeted ? "target" : "true class",
                  p[labels[i]], class_label(names, top).c_str(), p[top]);
      std::printf("  perturbation: L-inf %.0f/255, L2 %.2f/255, %lld values changed; perturbation.png: +-%.0f/255 "
                  "at full colour\n",
                  r.linf, r.l2, static_cast<long long>(r.l0), scale);
      std::printf("  outputs in %s/ (adversarial.png, perturbation.png, %strace.csv, summary.json, index.html)\n",
                  dirs[i].c_str(), o.no_animation ? "" : "animation.gif, ");
    }
  }
  if (paths.size() > 1) {  // several images: an overview beside their folders
    std::vector<ManifestRow> rows(paths.size());
    for (size_t i = 0; i < paths.size(); ++i) {
      rows[i].position = i;
      rows[i].id = dirs[i].substr(o.out.size() + 1);
      rows[i].image = paths[i];
      rows[i].target = class_label(names, labels[i]);
    }
    write_overview(o.out, rows, cat("trick attack: ", paths.size(), " images"));
    if (!o.json) std::printf("overview: %s/index.html, %s/results.csv\n", o.out.c_str(), o.out.c_str());
  }
  sigprocmask(SIG_SETMASK, &previous, nullptr);
  bool all = true;
  for (const ItemResult& r : results) all = all && r.success_8bit;
  return all ? 0 : 3;
}

// A copy of the command line's options for one manifest row: its image, its target (or the
// command line's), its folder DIR/<id>, and its own settings columns.
Options row_options(const Options& base, const ManifestRow& row) {
  Options o = base;
  o.images = {row.image};
  if (!row.target.empty()) o.targets = {row.target};
  o.out = base.out + "/" + row.id;
  for (const auto& kv : row.settings) {
    const std::string& k = kv.first;
    const std::string& v = kv.second;
    auto number = [&](double lo, double hi) {
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      TRICK_CHECK(end != v.c_str() && *end == '\0' && std::isfinite(d), "column ", k, ": '", v, "' is not a number");
      TRICK_CHECK(d >= lo && d <= hi, "column ", k, ": ", v, " is out of range [", lo, ", ", hi, "]");
      return d;
    };
    auto integer = [&](double lo, double hi) {
      const double d = number(lo, hi);
      TRICK_CHECK(d == std::floor(d), "column ", k, ": '", v, "' is not a whole number");
      return d;
    };
    if (k == "method") o.method = v;
    else if (k == "norm") o.norm = v;
    else if (k == "eps") o.eps = static_cast<float>(number(-1e9, 1e9)), o.eps_given = true;
    else if (k == "step") o.step = static_cast<float>(number(-1e9, 1e9)), o.step_given = true;
    else if (k == "steps") o.steps = static_cast<int>(integer(-1e9, 1e9));
    else if (k == "confidence") o.confidence = static_cast<float>(number(-1e9, 1e9));
    else if (k == "restarts") o.restarts = static_cast<int>(integer(-1e9, 1e9));
    else if (k == "seed") o.seed = static_cast<uint64_t>(integer(0, 9007199254740992.0));
    else if (k == "true_class") o.true_class = v;
    else if (k == "untargeted") {
      TRICK_CHECK(v == "true" || v == "false" || v == "1" || v == "0", "column untargeted: '", v,
                  "' is not true/false/1/0");
      o.untargeted = v == "true" || v == "1";
      if (o.untargeted && row.target.empty()) o.targets.clear();
    } else {
      fail("column ", k, " is not a setting");  // read_manifest refuses unknown columns; kept in step
    }
  }
  // The command line's --eps is the default of the rows that use one; a cw row ignores it
  // (its own eps column is still refused: cw has no budget).
  if (o.method == "cw" && !row.settings.count("eps")) o.eps_given = false;
  return o;
}

// What a manifest row asks for, as its summary.json records it: the image, the target (as
// written), the method and its settings after the command line's defaults, and the weights.
// A row whose summary.json has another fingerprint was done with other settings: it runs again.
nlohmann::json row_fingerprint(const Options& ro, const AttackSettings& s) {
  return {{"image", ro.images.at(0)},
          {"targets", ro.targets},
          {"untargeted", ro.untargeted},
          {"true_class", ro.true_class},
          {"method", attack_method_name(s.method)},
          {"settings", settings_json(s)},
          {"weights", ro.weights}};
}

// The fields where two fingerprints differ: "settings.eps_255 12 -> 4, ...".
std::string fingerprint_diff(const nlohmann::json& was, const nlohmann::json& now, const std::string& prefix = "") {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() || s.empty() ? "" : ", ") + s; };
  for (auto it = now.begin(); it != now.end(); ++it) {
    const nlohmann::json before = was.is_object() && was.contains(it.key()) ? was[it.key()] : nlohmann::json();
    if (before == it.value()) continue;
    if (before.is_object() && it.value().is_object())
      add(fingerprint_diff(before, it.value(), prefix + it.key() + "."));
    else
      add(cat(prefix, it.key(), " ", before.dump(), " -> ", it.value().dump()));
  }
  return out;
}

// A done row's summary.json, or a discarded value when it cannot be read.
nlohmann::json row_summary(const std::string& out, const ManifestRow& row) {
  std::ifstream in(out + "/" + row.id + "/summary.json");
  return nlohmann::json::parse(in, nullptr, false);
}

// Whether a done row was done as it is now asked for: its summary.json's fingerprint against
// `now`. A summary.json without one (written before fingerprints) counts as the same; one that
// cannot be read, as changed. `what` says what differs.
bool row_changed(const nlohmann::json& sum, const nlohmann::json& now, std::string* what) {
  if (sum.is_discarded() || !sum.is_object()) {
    *what = "its summary.json cannot be read";
    return true;
  }
  if (!sum.contains("manifest_row")) return false;
  if (sum["manifest_row"] == now) return false;
  *what = fingerprint_diff(sum["manifest_row"], now);
  return true;
}

// Whether a done row's summary.json says it reached its target (on the saved 8-bit image).
bool row_reached(const nlohmann::json& sum) {
  if (sum.is_discarded() || !sum.is_object() || !sum.contains("success")) return false;
  const nlohmann::json& ok = sum["success"];
  return ok.is_object() && ok.contains("8bit") && ok["8bit"].is_boolean() && ok["8bit"].get<bool>();
}

// trick attack --manifest jobs.csv --out DIR [--shard i/N]: every row of this shard that has
// no DIR/<id>/summary.json yet, one at a time with the model loaded once; a row that fails
// gets DIR/<id>/error.json and the others go on; DIR/results.csv after every row.
int run_manifest(Options& o) {
  TRICK_CHECK(o.images.empty(), "--manifest takes no image arguments (the rows name the images), got ",
              o.images.size());
  TRICK_CHECK(o.targets.size() <= 1, "--manifest: --target may be given once (the default for rows without one)");
  const std::vector<ManifestRow> rows = read_manifest(o.manifest);
  const Shard shard = o.shard.empty() ? Shard{} : parse_shard(o.shard);
  {  // the command line's settings are checked before anything runs
    Options check = o;
    check.images = {"-"};
    if (check.targets.empty()) check.untargeted = true;
    // Rows may give eps; a row that needs one and has none (or has one cw ignores) fails alone.
    if (check.method != "cw" && parse_ball(check.norm) == Ball::L2) check.eps_given = true;
    settings_of(check);
  }
  const Device dev = choose_device(o.device);
  std::unique_ptr<Model> model = o.weights.empty() ? open_default_model(dev) : open_model(o.weights, dev);
  WeightsHash weights_hash(o.weights);
  ensure_directory(o.out);
  std::vector<const ManifestRow*> mine;
  for (const ManifestRow& r : rows)
    if (shard.contains(r)) mine.push_back(&r);
  std::fprintf(stderr, "%s: %zu rows, %zu in shard %d/%d; outputs in %s/<id>/\n", o.manifest.c_str(), rows.size(),
               mine.size(), shard.index, shard.count, o.out.c_str());
  int skipped = 0, skipped_not_reached = 0, reached = 0, not_reached = 0, failed = 0, redone = 0;
  for (const ManifestRow* row : mine) {
    Options ro;
    AttackSettings s;
    std::string bad_row;  // the row's own settings are wrong: it fails below
    try {
      ro = row_options(o, *row);
      s = settings_of(ro);
      ro.manifest_row = row_fingerprint(ro, s);
    } catch (const std::exception& e) {
      bad_row = e.what();
    }
    if (row_state(o.out, *row) == RowState::Done) {
      std::string what = bad_row.empty() ? "" : "its settings are now invalid";
      const nlohmann::json summary = row_summary(o.out, *row);
      if (bad_row.empty() && !row_changed(summary, ro.manifest_row, &what)) {
        ++skipped;
        skipped_not_reached += !row_reached(summary);
        continue;
      }
      // Edited since it was done (or the command line's defaults changed): its old outputs
      // no longer describe the row. Without the old summary.json it is pending until it is
      // done again.
      std::fprintf(stderr, "%s:%d (row %s) changed since it was done (%s): attacking it again\n",
                   o.manifest.c_str(), row->line, row->id.c_str(), what.c_str());
      std::remove((o.out + "/" + row->id + "/summary.json").c_str());
      ++redone;
    }
    try {
      TRICK_CHECK(bad_row.empty(), bad_row);
      ImageFiles files(ro.images, SIZE_MAX);
      const int rc = attack_images(ro, s, *model, dev, weights_hash, files);
      clear_row_error(o.out, *row);
      (rc == 0 ? reached : not_reached) += 1;
    } catch (const std::exception& e) {
      if (g_interrupted) {
        write_overview(o.out, rows, cat("trick attack --manifest ", o.manifest));
        fail("interrupted (Ctrl-C) at row ", row->id, ": finished rows are kept; run the same command again to ",
             "continue");
      }
      const std::string what = dynamic_cast<const std::bad_alloc*>(&e) ? "out of memory" : e.what();
      std::fprintf(stderr, "failed: %s:%d (row %s): %s\n", o.manifest.c_str(), row->line, row->id.c_str(),
                   what.c_str());
      write_row_error(o.out, *row, what);
      ++failed;
    }
    write_overview(o.out, rows, cat("trick attack --manifest ", o.manifest));
  }
  const ManifestCounts n = write_overview(o.out, rows, cat("trick attack --manifest ", o.manifest));
  std::printf("manifest %s, shard %d/%d: %zu rows; now %d attacked (%d reached the target, %d did not), %d failed, "
              "%d already done%s%s\n",
              o.manifest.c_str(), shard.index, shard.count, mine.size(), reached + not_reached, reached,
              not_reached, failed, skipped,
              skipped_not_reached ? cat(" (", skipped_not_reached, " of them without reaching the target)").c_str() : "",
              redone ? cat(", ", redone, " redone (changed since)").c_str() : "");
  std::printf("all shards so far: %d done (%d reached the target), %d failed, %d pending; %s/results.csv, "
              "index.html\n",
              n.done, n.succeeded, n.failed, n.pending, o.out.c_str());
  // 0 only when every row of this shard is done and reached its target, this run or before.
  return failed == 0 && not_reached == 0 && skipped_not_reached == 0 ? 0 : 3;
}

int run(Options o) {
  o.command_line = command_line();
  if (o.threads > 0) set_num_threads(o.threads);
  {  // an --out that cannot be a folder is said before the model loads and the targets resolve
    struct stat st;
    TRICK_CHECK(::stat(o.out.c_str(), &st) != 0 || S_ISDIR(st.st_mode), "output directory ", o.out,
                " exists and is not a directory");
  }
  if (!o.manifest.empty()) return run_manifest(o);
  TRICK_CHECK(o.shard.empty(), "--shard needs --manifest");
  TRICK_CHECK(!o.images.empty(), "give the images to attack, or --manifest jobs.csv");
  const AttackSettings s = settings_of(o);
  // Every image is read before the model loads (a bad file fails at once) and kept: the batch
  // holds them all anyway.
  ImageFiles files(o.images, SIZE_MAX);
  const Device dev = choose_device(o.device);
  std::unique_ptr<Model> model = o.weights.empty() ? open_default_model(dev) : open_model(o.weights, dev);
  WeightsHash weights_hash(o.weights);
  return attack_images(o, s, *model, dev, weights_hash, files);
}

const bool registered = register_command(
    {"attack", "Change images until the model says the target (the main job)",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.add_option("images", o->images, "Image files (PNG, JPEG, ...)");
       app.add_option("--manifest", o->manifest,
                      "CSV of jobs (image,target[,id,method,eps,step,steps,confidence,norm,restarts,seed,untargeted,"
                      "true_class]): each row to DIR/<id>/, DIR/results.csv; rows already done are skipped");
       app.add_option("--shard", o->shard, "With --manifest: i/N, this process takes rows p with p % N == i");
       app.add_option("--target,-t", o->targets,
                      "Target class: index or name (e.g. 341 or pig), or least-likely or random (chosen per "
                      "image from the model's prediction; random: any class but the predicted one, by --seed); "
                      "once for all images, once per image, or several for one image");
       app.add_option("--weights", o->weights, "Weights (.safetensors, or a PyTorch .pth state dict); default: the embedded Fashion-MNIST model");
       app.add_option("--method,-m", o->method, "descent, fgsm, bim, pgd, mifgsm, adam or cw")->capture_default_str();
       app.add_option("--eps", o->eps,
                      "Perturbation budget in 8-bit units (8 = 8/255). With --norm l2 it must be given: the L2 "
                      "norm of the change over the whole image (765 = 3.0 in [0, 1] units)")
           ->capture_default_str()
           ->each([o](const std::string&) { o->eps_given = true; });
       app.add_option("--norm", o->norm, "The eps-ball: linf or l2 (l2 for pgd)")->capture_default_str();
       app.add_option("--step", o->step,
                      "Step in 8-bit units (sign methods: per step; descent: the first step's largest change; "
                      "adam: learning rate). Default 1 (fgsm: eps; pgd l2: eps/10)")
           ->each([o](const std::string&) { o->step_given = true; });
       app.add_option("--steps", o->steps, "Step budget")->capture_default_str();
       app.add_option("--confidence", o->confidence, "Stop when the target's probability reaches this")
           ->capture_default_str();
       app.add_flag("--untargeted", o->untargeted, "Move away from the true class instead of toward a target");
       app.add_option("--true-class", o->true_class, "With --untargeted: the true class (default: the model's top-1)");
       app.add_flag("--random-start", o->random_start, "Start at a random point of the eps-ball (default for pgd)");
       app.add_flag("--no-random-start", o->no_random_start, "pgd: start at the original image");
       app.add_option("--restarts", o->restarts, "Runs per image (with random starts); the best is kept")
           ->capture_default_str();
       app.add_option("--momentum", o->momentum, "mifgsm: momentum decay")->capture_default_str();
       app.add_option("--kappa", o->kappa, "cw: logit margin to reach")->capture_default_str();
       app.add_option("--cw-c", o->cw_c, "cw: initial constant")->capture_default_str();
       app.add_option("--cw-search", o->cw_search, "cw: binary-search rounds (each --steps steps)")
           ->capture_default_str();
       app.add_option("--cw-lr", o->cw_lr, "cw: Adam learning rate")->capture_default_str();
       app.add_option("--refine-steps", o->refine_steps, "8-bit steps tried when rounding loses a success")
           ->capture_default_str();
       app.add_option("--seed", o->seed, "Seed (random starts)")->capture_default_str()->check(whole_number());
       app.add_option("--out,-o", o->out, "Output folder")->capture_default_str();
       app.add_option("--frames", o->frames, "Most frames in the animation")->capture_default_str();
       app.add_option("--frame-width", o->frame_width, "Animation width in pixels")->capture_default_str();
       app.add_flag("--no-animation", o->no_animation, "Skip animation.gif");
       app.add_flag("--json", o->json, "Print each summary.json as one line on stdout");
       app.add_option("--input-size", o->input_size,
                      "'raw': the image already has the model's input size (no resize or crop)");
       app.add_option("--device", o->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
       add_backend_options(app, &o->graph);
       app.add_option("--threads", o->threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 1024));
       // Neither images nor a manifest is a command-line mistake (exit 2), caught while parsing.
       app.parse_complete_callback([o] {
         if (o->images.empty() && o->manifest.empty()) throw CLI::RequiredError("images (or --manifest)");
       });
       return [o] { return run(*o); };
     },
     10});

}  // namespace
}  // namespace trick::cmd_attack
