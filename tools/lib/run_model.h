// What the commands share around a model: choosing the device, opening the weights,
// turning image files into model input, and reading out the top classes.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"

namespace trick {

// "auto" (CUDA when a GPU is usable, else the CPU, saying so on stderr when CUDA was
// compiled but no device answers), "cpu", "cuda", "cuda:N".
Device choose_device(const std::string& option);

// Loads a model from a safetensors file, frozen (no parameter requires a gradient), on device.
std::unique_ptr<Model> open_model(const std::string& weights_path, Device device);
// The model embedded in the binary (the small Inception trained on Fashion-MNIST), likewise.
std::unique_ptr<Model> open_default_model(Device device);
// "embedded:<SHA-256 of the embedded weight file>"
std::string default_model_sha256();

// The model input for one decoded image (H, W, C) in [0, 1]: the model's evaluation
// transform, or none with raw = true (the image must then have the input size already).
// Returns (1, h, w, c) on the model's device, without gradient tracking.
Tensor model_input(Model& model, const Tensor& image, bool raw);

// Parses --input-size: "raw" -> true, "" / "model" -> false; anything else is an error.
bool parse_input_size(const std::string& option);

struct ClassScore {
  int index = 0;
  std::string label;  // the full synonym line
  float prob = 0.f;
};
// The k most probable classes of one row of probabilities, most probable first.
std::vector<ClassScore> top_k(const std::vector<float>& probs, const std::vector<std::string>& names, int k);

// Hex SHA-256 of a file's bytes (recorded in summaries so results name their weights).
std::string sha256_file(const std::string& path);

}  // namespace trick
