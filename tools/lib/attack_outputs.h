// The files an attack leaves in its output folder, except the animation (streamed while the
// attack runs): original.png, adversarial.png, perturbation.png, trace.csv, trace.json,
// summary.json and index.html. Every file is written atomically.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attack/attack.h"

namespace trick {

struct AttackRecord {
  std::string dir;              // output folder (exists)
  std::string image_path;       // the attacked file
  Tensor original;              // (H, W, C) as decoded
  const ItemResult* result = nullptr;
  int label = 0;                // target (targeted) or true class (untargeted)
  std::string chosen_by;        // "", or how the target was chosen: "least-likely" or "random"
  const std::vector<std::string>* class_names = nullptr;
  std::string model_name, weights, weights_sha256, device;
  // What computed it: the CPU engine and threads, or the GPU backend, math and graph mode.
  nlohmann::json backend;
  AttackSettings settings;
  double wall_seconds = 0;
  std::string command_line;
  bool animation = true;        // animation.gif was written
  // A manifest row's fingerprint (what was asked: image, target, method, settings, weights),
  // stored as summary.json's "manifest_row": a rerun redoes the row when it no longer matches.
  nlohmann::json manifest_row;
};

// Short label of a class (its first synonym).
std::string class_label(const std::vector<std::string>& names, int index);

// summary.json's "settings" object: what the attack ran with (8-bit units).
nlohmann::json settings_json(const AttackSettings& s);
nlohmann::json summary_json(const AttackRecord& r);
// Writes every file but the animation; returns the scale of perturbation.png (8-bit levels
// at full colour).
float write_attack_outputs(const AttackRecord& r);

}  // namespace trick
