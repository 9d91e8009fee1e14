// Training and evaluating the Fashion-MNIST model (models/fashion_inception.h): the loop
// behind `trick train` and `trick eval`, in the library so tests can drive it directly.
//
// Reproducibility: a run is a function of its TrainSettings and the thread count. The
// initial weights come from Rng(seed); epoch e's shuffle from an Rng derived from (seed, e),
// step s's augmentation from one derived from (seed, s). So the "RNG state" of a
// checkpoint is its step count, and resuming from any step continues the exact same
// sequence. The CPU kernels reduce in a fixed order for a fixed thread count, so the same
// settings and --threads give bit-identical weights, interrupted and resumed or not.
//
// Checkpoints are safetensors: the model's unfolded parameters and batch-norm buffers
// under their own names, the optimiser's state under "optim.<param>.<slot>", and metadata
// {model: "fashion_inception", format, epoch, step, steps_per_epoch, optimizer, settings
// (JSON), test_accuracy (after an epoch)}. load_model() reads one and ignores "optim.*".
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layers/optim.h"
#include "models/fashion_inception.h"
#include "tools/lib/idx.h"

namespace trick {

// Everything that decides the trajectory of a run; recorded in every checkpoint.
struct TrainSettings {
  int epochs = 10;
  int batch = 128;
  std::string optimizer = "sgd";  // sgd, adam, adamw
  float lr = 0.1f;
  float momentum = 0.9f;
  float weight_decay = 5e-4f;     // conv and fc weights only; never biases or batch norms
  std::string schedule = "cosine";  // cosine, step, constant
  int64_t warmup = 200;            // steps of linear warm-up
  bool augment = true;             // random 28x28 crop of the 2-pixel zero-padded image + mirror
  uint64_t seed = 1;
  int64_t limit = 0;               // train on the first `limit` images (0: all)

  std::string to_json() const;
  static TrainSettings from_json(const std::string& text, const std::string& where);
  void validate() const;
};

// How this invocation runs (not part of the trajectory).
struct TrainRun {
  std::string out;          // checkpoint, written after every epoch and when stopping ("": none)
  std::string export_path;  // when the last epoch is done: the weights alone ("": none)
  bool resume = false;      // continue from the checkpoint at `out`
  int64_t max_steps = 0;    // stop once the run has done this many optimiser steps in all (0: no limit)
  int64_t test_limit = 0;   // evaluate on the first `test_limit` test images (0: all)
  bool evaluate_each_epoch = true;
};

struct EvalResult {
  int64_t correct = 0, total = 0;
  double loss = 0.0;               // mean cross-entropy
  std::vector<int64_t> confusion;  // classes x classes, row = true class, column = prediction
  int classes = 0;
  double accuracy() const { return total ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
};

// Evaluation-mode accuracy and confusion of `model` on the first `limit` items (0: all), in
// batches of `batch` (a fixed batch keeps the arithmetic, and so the result, the same).
// With `probs`, also every item's class probabilities (items x classes, row-major).
EvalResult evaluate(Model& model, const IdxDataset& data, int64_t limit = 0, int batch = 500,
                    std::vector<float>* probs = nullptr);
// "test accuracy 91.87% (9187/10000)"
std::string accuracy_line(const EvalResult& r);

struct StepReport {
  int64_t step = 0;  // optimiser steps done, this one included
  int64_t total_steps = 0;
  int epoch = 0;     // 0-based epoch of this step
  float loss = 0.f;  // this batch's mean loss
  float accuracy = 0.f;
  float lr = 0.f;
  double images_per_second = 0.0;  // over this invocation's steps so far
};

struct EpochReport {
  int epoch = 0;  // 0-based, just finished
  int64_t step = 0;
  double train_loss = 0.0, train_accuracy = 0.0;  // over this epoch's steps run in this invocation
  bool evaluated = false;
  EvalResult test;
  double seconds = 0.0, images_per_second = 0.0;
};

struct TrainCallbacks {
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EpochReport&)> on_epoch;
  std::function<void(const std::string&)> on_note;  // "resumed from ...", "saved ..."
};

struct TrainResult {
  std::unique_ptr<FashionInception> model;  // unfolded, training mode off
  TrainSettings settings;
  int64_t step = 0, total_steps = 0;
  bool finished = false;  // every epoch done
  std::vector<float> losses;  // each step's batch loss in this invocation
};

// Trains (or resumes, with run.resume: settings then come from the checkpoint and the
// `settings` argument is ignored). Throws trick::Error on bad settings or files.
TrainResult train_fashion(const TrainSettings& settings, const TrainRun& run, const IdxDataset& train,
                          const IdxDataset& test, const TrainCallbacks& callbacks = {});

// The settings recorded in a checkpoint (for `trick train --resume` to compare options).
TrainSettings read_checkpoint_settings(const std::string& path);

// Writes the model (parameters and batch-norm buffers, unfolded) and, when given, the
// optimiser's state, with metadata, atomically.
void save_fashion_checkpoint(const std::string& path, FashionInception& model, const Optimizer* optimizer,
                             const std::map<std::string, std::string>& metadata);

// A lowercase file-name form of a class name: "T-shirt/top" -> "t-shirt_top", "Ankle boot" -> "ankle_boot".
std::string class_slug(const std::string& name);

}  // namespace trick
