#include "tools/lib/fashion_train.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "kernels/gemm.h"
#include "models/safetensors.h"
#include "tensor/random.h"

namespace trick {

namespace {

constexpr const char* kCheckpointFormat = "trick-train-checkpoint-1";
constexpr const char* kOptimPrefix = "optim.";
constexpr int kSide = 28, kPixels = kSide * kSide;
constexpr int kPad = 2;  // augmentation: crop offsets -kPad..kPad

// Independent generators for (seed, purpose, index): the shuffle of epoch e, the
// augmentation of step s. Mixing through splitmix64 keeps nearby indices uncorrelated.
Rng derived_rng(uint64_t seed, uint64_t purpose, uint64_t index) {
  Rng mix(seed ^ (purpose * 0x9e3779b97f4a7c15ULL));
  const uint64_t a = mix.next_u64();
  Rng mix2(a + index * 0xd1b54a32d192ed03ULL);
  return Rng(mix2.next_u64());
}

std::vector<int64_t> epoch_order(uint64_t seed, int epoch, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  Rng rng = derived_rng(seed, 1, static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);  // Fisher-Yates
  return order;
}

// The batch of items order[begin, begin + batch): images (B, 28, 28, 1), labels (B).
void fill_batch(const IdxDataset& data, const std::vector<int64_t>& order, int64_t begin, int batch, bool augment,
                Rng& rng, Tensor& images, Tensor& labels) {
  const float* src = data.images.data();
  const float* lab = data.labels.data();
  float* dst = images.data();
  for (int b = 0; b < batch; ++b) {
    const int64_t item = order[begin + b];
    const float* s = src + item * kPixels;
    float* d = dst + static_cast<int64_t>(b) * kPixels;
    labels.data()[b] = lab[item];
    if (!augment) {
      std::memcpy(d, s, sizeof(float) * kPixels);
      continue;
    }
    // A 28x28 window of the image padded with 2 black pixels on every side, mirrored
    // left-right half of the time: out(y, x) = in(y + dy, flip ? 27 - x + dx : x + dx).
    const int dy = static_cast<int>(rng.below(2 * kPad + 1)) - kPad;
    const int dx = static_cast<int>(rng.below(2 * kPad + 1)) - kPad;
    const bool flip = rng.below(2) == 1;
    for (int y = 0; y < kSide; ++y) {
      const int sy = y + dy;
      for (int x = 0; x < kSide; ++x) {
        const int sx = (flip ? kSide - 1 - x : x) + dx;
        d[y * kSide + x] = (sy < 0 || sy >= kSide || sx < 0 || sx >= kSide) ? 0.f : s[sy * kSide + sx];
      }
    }
  }
}

int argmax_row(const float* row, int k) {
  int best = 0;
  for (int j = 1; j < k; ++j)
    if (row[j] > row[best]) best = j;
  return best;
}

std::vector<OptimParam> optim_params(FashionInception& model, float weight_decay) {
  std::vector<OptimParam> out;
  for (auto& [name, v] : model.named_parameters()) {
    // Decay the conv and fc weights; batch-norm scales and shifts and biases stay free.
    const bool decays = v->value().ndim() >= 2;
    out.push_back({name, v, decays ? weight_decay : 0.f});
  }
  return out;
}

OptimizerOptions optim_options(const TrainSettings& s) {
  OptimizerOptions o;
  o.lr = s.lr;
  o.momentum = s.optimizer == "sgd" ? s.momentum : 0.f;
  return o;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string metadata_of(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  TRICK_CHECK(it != f.metadata().end(), f.path(), ": not a trick training checkpoint (no \"", key,
              "\" in the metadata)");
  return it->second;
}

int64_t parse_int(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  fail(what, ": '", s, "' is not an integer");
}

int64_t steps_per_epoch(const TrainSettings& s, int64_t train_size) {
  const int64_t n = s.limit > 0 ? std::min(s.limit, train_size) : train_size;
  TRICK_CHECK(n >= s.batch, "train: ", n, " training images are fewer than one batch of ", s.batch);
  return n / s.batch;  // the last partial batch of an epoch is dropped
}

// The shortest decimal that reads back as exactly f, as a double: JSON then shows 0.1, not
// 0.10000000149011612, and from_json's float conversion gives f back.
double json_float(float f) {
  char buf[32];
  for (int digits = 6; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) break;
  }
  return std::strtod(buf, nullptr);
}

}  // namespace

// --- settings --------------------------------------------------------------------------------

std::string TrainSettings::to_json() const {
  nlohmann::ordered_json j;
  j["epochs"] = epochs;
  j["batch"] = batch;
  j["optimizer"] = optimizer;
  j["lr"] = json_float(lr);
  j["momentum"] = json_float(momentum);
  j["weight_decay"] = json_float(weight_decay);
  j["schedule"] = schedule;
  j["warmup"] = warmup;
  j["augment"] = augment;
  j["seed"] = seed;
  j["limit"] = limit;
  return j.dump();
}

TrainSettings TrainSettings::from_json(const std::string& text, const std::string& where) {
  TrainSettings s;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    s.epochs = j.at("epochs").get<int>();
    s.batch = j.at("batch").get<int>();
    s.optimizer = j.at("optimizer").get<std::string>();
    s.lr = j.at("lr").get<float>();
    s.momentum = j.at("momentum").get<float>();
    s.weight_decay = j.at("weight_decay").get<float>();
    s.schedule = j.at("schedule").get<std::string>();
    s.warmup = j.at("warmup").get<int64_t>();
    s.augment = j.at("augment").get<bool>();
    s.seed = j.at("seed").get<uint64_t>();
    s.limit = j.at("limit").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": bad training settings in the metadata: ", e.what());
  }
  return s;
}

void TrainSettings::validate() const {
  TRICK_CHECK(epochs >= 1, "train: --epochs must be at least 1, got ", epochs);
  TRICK_CHECK(batch >= 2, "train: --batch must be at least 2 (batch norm needs a batch), got ", batch);
  TRICK_CHECK(optimizer == "sgd" || optimizer == "adam" || optimizer == "adamw", "train: unknown optimizer '",
              optimizer, "' (known: sgd, adam, adamw)");
  TRICK_CHECK(std::isfinite(lr) && lr > 0.f, "train: --lr must be a positive number, got ", lr);
  TRICK_CHECK(momentum >= 0.f && momentum < 1.f, "train: --momentum must be in [0, 1), got ", momentum);
  TRICK_CHECK(std::isfinite(weight_decay) && weight_decay >= 0.f, "train: --weight-decay must be >= 0, got ",
              weight_decay);
  parse_lr_schedule(schedule);
  TRICK_CHECK(warmup >= 0, "train: --warmup must be >= 0, got ", warmup);
  TRICK_CHECK(limit >= 0, "train: --limit must be >= 0, got ", limit);
}

// --- evaluation ------------------------------------------------------------------------------

EvalResult evaluate(Model& model, const IdxDataset& data, int64_t limit, int batch, std::vector<float>* probs) {
  TRICK_CHECK(batch >= 1, "evaluate: batch must be >= 1");
  TRICK_CHECK(data.images.ndim() == 4 && data.images.dim(1) == model.input_height() &&
                  data.images.dim(2) == model.input_width() && data.images.dim(3) == model.input_channels(),
              "evaluate: images of shape ", data.images.shape().str(), " for a model taking ", model.input_height(),
              "x", model.input_width(), "x", model.input_channels());
  const int64_t n = limit > 0 ? std::min(limit, data.size()) : data.size();
  const int k = model.classes();
  EvalResult r;
  r.classes = k;
  r.confusion.assign(static_cast<size_t>(k * k), 0);
  const bool was_training = model.is_training();
  model.train(false);
  NoGradScope no_grad;
  const Device dev = model.device();
  double loss_sum = 0.0;
  if (probs) probs->clear();
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t b1 = std::min(n, b0 + batch);
    const Tensor x = data.images.slice_first(b0, b1).to(dev);
    const Tensor y = data.labels.slice_first(b0, b1);
    const Var logits = model.forward(Var(x));
    const std::vector<float> z = logits.value().to_vector();
    const std::vector<float> losses = cross_entropy(logits, y.to(dev)).value().to_vector();
    if (probs) {
      const std::vector<float> p = softmax(logits).value().to_vector();
      probs->insert(probs->end(), p.begin(), p.end());
    }
    for (int64_t i = 0; i < b1 - b0; ++i) {
      const int pred = argmax_row(z.data() + i * k, k);
      const int truth = static_cast<int>(y.data()[i]);
      TRICK_CHECK(truth >= 0 && truth < k, "evaluate: label ", truth, " of item ", b0 + i, " for a model of ", k,
                  " classes");
      r.confusion[static_cast<size_t>(truth * k + pred)]++;
      r.correct += pred == truth;
      loss_sum += losses[i];
    }
  }
  r.total = n;
  r.loss = n ? loss_sum / static_cast<double>(n) : 0.0;
  model.train(was_training);
  return r;
}

std::string accuracy_line(const EvalResult& r) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "test accuracy %.2f%% (%lld/%lld)", 100.0 * r.accuracy(),
                static_cast<long long>(r.correct), static_cast<long long>(r.total));
  return buf;
}

// --- checkpoints -----------------------------------------------------------------------------

void save_fashion_checkpoint(const std::string& path, FashionInception& model, const Optimizer* optimizer,
                             const std::map<std::string, std::string>& metadata) {
  TRICK_CHECK(!model.folded(), "checkpoint: the model's batch norms are folded; checkpoints hold unfolded weights");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, v] : model.named_parameters()) tensors.emplace_back(name, v->value());
  for (auto& [name, t] : model.named_buffers()) tensors.emplace_back(name, *t);
  if (optimizer)
    for (auto& [name, t] : optimizer->state()) tensors.emplace_back(kOptimPrefix + name, t);
  std::map<std::string, std::string> meta = metadata;
  meta["model"] = "fashion_inception";
  write_safetensors(path, tensors, meta);
}

TrainSettings read_checkpoint_settings(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  TRICK_CHECK(metadata_of(f, "format") == kCheckpointFormat, path, ": checkpoint format '", metadata_of(f, "format"),
              "', expected ", kCheckpointFormat);
  return TrainSettings::from_json(metadata_of(f, "settings"), path);
}

namespace {

// Restores model, optimiser state and the step from a checkpoint written by train_fashion.
int64_t load_checkpoint(const std::string& path, FashionInception& model, Optimizer& opt,
                        const TrainSettings& settings) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  TRICK_CHECK(metadata_of(f, "model") == "fashion_inception", path, ": a checkpoint of model '",
              metadata_of(f, "model"), "', not fashion_inception");
  TRICK_CHECK(metadata_of(f, "optimizer") == settings.optimizer, path, ": optimizer state is for ",
              metadata_of(f, "optimizer"), ", the settings say ", settings.optimizer);
  const int64_t step = parse_int(metadata_of(f, "step"), path + ": metadata \"step\"");
  const int64_t opt_steps = parse_int(metadata_of(f, "optimizer_steps"), path + ": metadata \"optimizer_steps\"");
  StateDict weights;
  std::map<std::string, Tensor> optim;
  const std::string prefix = kOptimPrefix;
  for (const std::string& name : f.names()) {
    TRICK_CHECK(f.info(name).dtype == "F32", path, ": tensor '", name, "' is ", f.info(name).dtype,
                "; a checkpoint holds F32 only");
    if (name.compare(0, prefix.size(), prefix) == 0)
      optim[name.substr(prefix.size())] = f.read_f32(name);
    else
      weights[name] = f.read_f32(name);
  }
  try {
    model.load_state_dict(weights);
    opt.load_state(optim, opt_steps);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  TRICK_CHECK(step >= 0, path, ": negative step ", step);
  return step;
}

}  // namespace

// --- the loop --------------------------------------------------------------------------------

TrainResult train_fashion(const TrainSettings& settings_in, const TrainRun& run, const IdxDataset& train,
                          const IdxDataset& test, const TrainCallbacks& cb) {
  using Clock = std::chrono::steady_clock;
  TrainSettings s = settings_in;
  if (run.resume) {
    TRICK_CHECK(!run.out.empty(), "train: --resume needs the checkpoint (--out)");
    TRICK_CHECK(file_exists(run.out), "train: --resume: no checkpoint at ", run.out);
    s = read_checkpoint_settings(run.out);
  }
  s.validate();
  TRICK_CHECK(train.images.ndim() == 4 && train.images.dim(1) == kSide && train.images.dim(2) == kSide &&
                  train.images.dim(3) == 1 && train.images.is_contiguous(),
              "train: training images must be (N, 28, 28, 1), got ", train.images.shape().str());
  const int64_t per_epoch = steps_per_epoch(s, train.size());
  const int64_t total = per_epoch * s.epochs;
  const int64_t n_train = per_epoch * s.batch;  // items visited per epoch

  TrainResult result;
  result.settings = s;
  result.total_steps = total;
  result.model = std::make_unique<FashionInception>();
  FashionInception& model = *result.model;
  {
    Rng init(s.seed);
    model.reset_parameters(init);
  }
  std::unique_ptr<Optimizer> opt = make_optimizer(s.optimizer, optim_params(model, s.weight_decay), optim_options(s));
  int64_t step = 0;
  if (run.resume) {
    step = load_checkpoint(run.out, model, *opt, s);
    TRICK_CHECK(step <= total, run.out, ": checkpoint at step ", step, " is past the run's ", total, " steps");
    if (cb.on_note) cb.on_note(cat("resumed from ", run.out, " at step ", step, " of ", total));
  }

  auto metadata = [&](int64_t at, const EvalResult* eval) {
    std::map<std::string, std::string> m;
    m["format"] = kCheckpointFormat;
    m["epoch"] = std::to_string(at / per_epoch);  // completed epochs
    m["step"] = std::to_string(at);
    m["steps_per_epoch"] = std::to_string(per_epoch);
    m["total_steps"] = std::to_string(total);
    m["optimizer"] = s.optimizer;
    m["optimizer_steps"] = std::to_string(opt->steps());
    m["settings"] = s.to_json();
    m["rng"] = "derived from (seed, epoch) for the shuffle and (seed, step) for augmentation: no stored state";
    m["threads"] = std::to_string(num_threads());
    if (eval) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.4f", 100.0 * eval->accuracy());
      m["test_accuracy"] = buf;
    }
    return m;
  };
  auto save = [&](int64_t at, const EvalResult* eval) {
    if (run.out.empty()) return;
    save_fashion_checkpoint(run.out, model, opt.get(), metadata(at, eval));
    if (cb.on_note) cb.on_note(cat("saved checkpoint ", run.out, " (step ", at, ")"));
  };

  const int64_t stop = run.max_steps > 0 ? std::min(total, run.max_steps) : total;
  Tensor images = Tensor::empty(Shape{s.batch, kSide, kSide, 1});
  Tensor labels = Tensor::empty(Shape{s.batch});
  const Clock::time_point run_start = Clock::now();
  int64_t run_images = 0;
  EvalResult last_eval;
  bool have_eval = false;
  while (step < stop) {
    const int epoch = static_cast<int>(step / per_epoch);
    const std::vector<int64_t> order = epoch_order(s.seed, epoch, n_train);
    const Clock::time_point epoch_start = Clock::now();
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    model.train(true);
    while (step < stop && step / per_epoch == epoch) {
      const int64_t begin = (step % per_epoch) * s.batch;
      Rng aug = derived_rng(s.seed, 2, static_cast<uint64_t>(step));
      fill_batch(train, order, begin, s.batch, s.augment, aug, images, labels);
      model.zero_grad();
      const Var logits = model.forward(Var(images));
      Var loss = mean(cross_entropy(logits, labels));
      loss.backward();
      const float lr = scheduled_lr(parse_lr_schedule(s.schedule), s.lr, step, total, s.warmup);
      opt->set_lr(lr);
      opt->step();
      ++step;

      const float l = loss.value().item();
      TRICK_CHECK(std::isfinite(l), "train: the loss became ", l, " at step ", step,
                  " (learning rate too high?)");
      const std::vector<float> z = logits.value().to_vector();
      int64_t ok = 0;
      for (int b = 0; b < s.batch; ++b) ok += argmax_row(z.data() + b * 10, 10) == static_cast<int>(labels.data()[b]);
      correct += ok;
      seen += s.batch;
      loss_sum += l * s.batch;
      run_images += s.batch;
      result.losses.push_back(l);
      if (cb.on_step) {
        StepReport r;
        r.step = step;
        r.total_steps = total;
        r.epoch = epoch;
        r.loss = l;
        r.accuracy = static_cast<float>(ok) / static_cast<float>(s.batch);
        r.lr = lr;
        const double secs = std::chrono::duration<double>(Clock::now() - run_start).count();
        r.images_per_second = secs > 0 ? static_cast<double>(run_images) / secs : 0.0;
        cb.on_step(r);
      }
    }
    model.train(false);
    const bool epoch_done = step % per_epoch == 0;
    if (!epoch_done) break;  // stopped by max_steps inside an epoch
    EpochReport er;
    er.epoch = epoch;
    er.step = step;
    er.seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    er.images_per_second = er.seconds > 0 ? static_cast<double>(seen) / er.seconds : 0.0;
    er.train_loss = seen ? loss_sum / static_cast<double>(seen) : 0.0;
    er.train_accuracy = seen ? static_cast<double>(correct) / static_cast<double>(seen) : 0.0;
    if (run.evaluate_each_epoch && test.size() > 0) {
      er.test = evaluate(model, test, run.test_limit);
      er.evaluated = true;
      last_eval = er.test;
      have_eval = true;
    }
    if (cb.on_epoch) cb.on_epoch(er);
    save(step, have_eval ? &last_eval : nullptr);
  }
  model.train(false);
  result.step = step;
  result.finished = step == total;
  if (step % per_epoch != 0) save(step, nullptr);  // stopped inside an epoch: keep where we are
  if (result.finished && !run.export_path.empty()) {
    if (!have_eval && test.size() > 0) {
      last_eval = evaluate(model, test, run.test_limit);
      have_eval = true;
    }
    std::map<std::string, std::string> m = metadata(step, have_eval ? &last_eval : nullptr);
    m["format"] = "trick-weights-1";
    m.erase("optimizer_steps");
    save_fashion_checkpoint(run.export_path, model, nullptr, m);
    if (cb.on_note) cb.on_note(cat("exported the weights (no optimiser state) to ", run.export_path));
  }
  return result;
}

std::string class_slug(const std::string& name) {
  std::string out;
  for (char c : name) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-')
      out += static_cast<char>(std::tolower(u));
    else if (!out.empty() && out.back() != '_')
      out += '_';
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out;
}

}  // namespace trick
