// Building models by name and from weight files.
#pragma once
#include <memory>
#include <string>

#include "models/model.h"

namespace trick {

// A model with seeded random weights (He-initialised convs, batch norms at identity,
// folded): for benchmarks and tests that need no trained weights.
std::unique_ptr<Model> random_model(const std::string& name, uint64_t seed);

// Reads a safetensors file; the architecture comes from its metadata ("model"), or is
// recognised from the tensor names (torchvision/timm Inception v3 keys).
std::unique_ptr<Model> load_model(const std::string& weights_path);

// The default model: the small Fashion-MNIST Inception trained by `trick train`
// (data/models/fashion_inception.safetensors, compiled into the library), BN folded.
// Needs no file at run time.
std::unique_ptr<Model> load_default_model();
// The embedded weight file's bytes (e.g. for its SHA-256 in summaries).
std::string default_weights_bytes();

}  // namespace trick
