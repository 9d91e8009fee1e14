// trick train: trains the small Fashion-MNIST Inception (models/fashion_inception.h) on the
// CPU, checkpointing after every epoch; --resume continues a checkpoint exactly.
#include <sys/stat.h>

#include <cstdio>

#include "kernels/gemm.h"
#include "tools/command.h"
#include "tools/lib/run_model.h"
#include "tools/lib/atomic_file.h"
#include "tools/lib/fashion_train.h"

namespace trick::cmd_train {
namespace {

struct Options {
  TrainSettings s;
  TrainRun run;
  std::string data = kFashionMnistDir;
  int threads = 0;
  int64_t print_every = 50;
};

// With --resume the run's settings are the checkpoint's; an option given explicitly must agree.
void check_resume_options(const CLI::App& app, const TrainSettings& given, const TrainSettings& saved,
                          const std::string& path) {
  auto check = [&](const char* opt, bool same, const std::string& g, const std::string& r) {
    if (app.count(opt) > 0 && !same)
      fail(opt, " ", g, " differs from the checkpoint's ", r, " (", path,
           "): --resume continues the recorded run; start a new one with another --out");
  };
  check("--epochs", given.epochs == saved.epochs, cat(given.epochs), cat(saved.epochs));
  check("--batch", given.batch == saved.batch, cat(given.batch), cat(saved.batch));
  check("--optimizer", given.optimizer == saved.optimizer, given.optimizer, saved.optimizer);
  check("--lr", given.lr == saved.lr, cat(given.lr), cat(saved.lr));
  check("--momentum", given.momentum == saved.momentum, cat(given.momentum), cat(saved.momentum));
  check("--weight-decay", given.weight_decay == saved.weight_decay, cat(given.weight_decay), cat(saved.weight_decay));
  check("--schedule", given.schedule == saved.schedule, given.schedule, saved.schedule);
  check("--warmup", given.warmup == saved.warmup, cat(given.warmup), cat(saved.warmup));
  check("--augment", given.augment == saved.augment, given.augment ? "on" : "off", saved.augment ? "on" : "off");
  check("--seed", given.seed == saved.seed, cat(given.seed), cat(saved.seed));
  check("--limit", given.limit == saved.limit, cat(given.limit), cat(saved.limit));
}

void print_confusion_summary(const EvalResult& r) {
  std::printf("  per class:");
  for (int c = 0; c < r.classes; ++c) {
    int64_t row = 0;
    for (int j = 0; j < r.classes; ++j) row += r.confusion[c * r.classes + j];
    std::printf(" %.1f", row ? 100.0 * r.confusion[c * r.classes + c] / row : 0.0);
  }
  std::printf("\n");
}

int run(const CLI::App& app, Options& o) {
  TRICK_CHECK(o.run.max_steps >= 0, "--steps must be >= 0, got ", o.run.max_steps);
  TRICK_CHECK(o.run.test_limit >= 0, "--test-limit must be >= 0, got ", o.run.test_limit);
  TRICK_CHECK(o.print_every >= 1, "--print-every must be >= 1, got ", o.print_every);
  TRICK_CHECK(!o.run.out.empty(), "--out is required (the checkpoint file)");
  if (o.threads > 0) set_num_threads(o.threads);
  if (o.run.resume) {
    check_resume_options(app, o.s, read_checkpoint_settings(o.run.out), o.run.out);
  } else {
    o.s.validate();
    // A long run's checkpoint is not overwritten by a slip of the keyboard.
    struct stat st;
    const bool exists = ::stat(o.run.out.c_str(), &st) == 0;
    TRICK_CHECK(!(exists && S_ISDIR(st.st_mode)), o.run.out, " is a directory: --out is the checkpoint file");
    TRICK_CHECK(!exists, o.run.out, " exists: give --resume to continue that run, or ",
                "remove it to start a new one");
  }
  check_output_file(o.run.out);  // its folder, before the first epoch rather than after it
  if (!o.run.export_path.empty()) check_output_file(o.run.export_path);  // written only at the end

  const IdxDataset train = read_fashion_mnist(o.data, "train");
  const IdxDataset test = read_fashion_mnist(o.data, "test");
  std::printf("data: %lld training, %lld test images from %s; threads %d\n", static_cast<long long>(train.size()),
              static_cast<long long>(test.size()), o.data.c_str(), num_threads());

  TrainCallbacks cb;
  const int64_t every = o.print_every;
  cb.on_step = [every](const StepReport& r) {
    if (r.step % every != 0 && r.step != r.total_steps) return;
    std::printf("epoch %d  step %lld/%lld  loss %.4f  acc %5.1f%%  lr %.5f  %.0f img/s\n", r.epoch + 1,
                static_cast<long long>(r.step), static_cast<long long>(r.total_steps), r.loss, 100.0 * r.accuracy,
                r.lr, r.images_per_second);
    std::fflush(stdout);
  };
  cb.on_epoch = [](const EpochReport& r) {
    std::printf("epoch %d done  step %lld  train loss %.4f  train acc %.2f%%  %.1f s  %.0f img/s\n", r.epoch + 1,
                static_cast<long long>(r.step), r.train_loss, 100.0 * r.train_accuracy, r.seconds,
                r.images_per_second);
    if (r.evaluated) {
      std::printf("  %s  test loss %.4f\n", accuracy_line(r.test).c_str(), r.test.loss);
      print_confusion_summary(r.test);
    }
    std::fflush(stdout);
  };
  cb.on_note = [](const std::string& s) {
    std::printf("%s\n", s.c_str());
    std::fflush(stdout);
  };
  if (!o.run.resume)
    std::printf("settings: %s\n", o.s.to_json().c_str());
  const TrainResult r = train_fashion(o.s, o.run, train, test, cb);
  if (o.run.resume) std::printf("settings: %s\n", r.settings.to_json().c_str());
  std::printf("%s at step %lld of %lld\n", r.finished ? "finished" : "stopped", static_cast<long long>(r.step),
              static_cast<long long>(r.total_steps));
  return 0;
}

const bool registered = register_command(
    {"train", "Train the small Fashion-MNIST Inception (the default model) on the CPU",
     [](CLI::App& app) {
       auto o = std::make_shared<Options>();
       app.footer(
           "Reproducible: the same settings, data and --threads give bit-identical weights on the same\n"
           "machine, also when a run is stopped (--steps) and continued with --resume. The shuffle and\n"
           "the augmentation are derived from (--seed, epoch/step), so a checkpoint needs no RNG state.\n"
           "Example (the shipped model, data/models/README.md):\n"
           "  trick train --out /tmp/fashion.safetensors --export data/models/fashion_inception.safetensors");
       app.add_option("--data", o->data, "Folder with the Fashion-MNIST IDX files")->capture_default_str();
       app.add_option("--out", o->run.out, "Checkpoint file (.safetensors), written after every epoch")->required();
       app.add_option("--export", o->run.export_path,
                      "When the last epoch is done, also write the weights alone (no optimiser state) here");
       app.add_flag("--resume", o->run.resume,
                    "Continue the run in the --out checkpoint (its recorded settings; given ones must agree)");
       app.add_option("--epochs", o->s.epochs, "Epochs")->capture_default_str();
       app.add_option("--batch", o->s.batch, "Batch size")->capture_default_str();
       app.add_option("--optimizer", o->s.optimizer, "sgd, adam or adamw")->capture_default_str();
       app.add_option("--lr", o->s.lr, "Peak learning rate")->capture_default_str();
       app.add_option("--momentum", o->s.momentum, "SGD momentum")->capture_default_str();
       app.add_option("--weight-decay", o->s.weight_decay, "Weight decay of conv and fc weights")
           ->capture_default_str();
       app.add_option("--schedule", o->s.schedule, "Learning-rate schedule: cosine, step or constant")
           ->capture_default_str();
       app.add_option("--warmup", o->s.warmup, "Steps of linear learning-rate warm-up")->capture_default_str();
       app.add_option("--augment", o->s.augment,
                      "Random crop of the 2-pixel padded image + horizontal flip (true/false)")
           ->capture_default_str();
       app.add_option("--seed", o->s.seed, "Seed of the initial weights, shuffles and augmentation")
           ->capture_default_str()
           ->check(whole_number());
       app.add_option("--limit", o->s.limit, "Train on the first N training images only (0: all)")
           ->capture_default_str();
       app.add_option("--steps", o->run.max_steps,
                      "Stop once N optimiser steps are done in all (checkpoint kept; 0: no limit)");
       app.add_option("--test-limit", o->run.test_limit, "Evaluate on the first N test images only (0: all)");
       app.add_option("--threads", o->threads, "CPU threads (default: all cores); fix it for reproducibility")->check(CLI::Range(0, 1024));
       add_cpu_conv_option(app);
       app.add_option("--print-every", o->print_every, "Print progress every N steps")->capture_default_str();
       return [o, &app] { return run(app, *o); };
     },
     60});

}  // namespace
}  // namespace trick::cmd_train
