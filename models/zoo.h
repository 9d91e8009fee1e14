// Building models by name and from weight files.
#pragma once
#include <functional>
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

// The architecture a set of tensor names belongs to: "inception_v3" (torchvision or timm
// keys), "fashion_inception" (trick's own), or "" when neither.
std::string model_name_from_keys(const std::function<bool(const std::string&)>& has_key);

// A model of architecture `name` from float32 weights read elsewhere (a PyTorch .pth, by
// tools/lib/pth.h): the same checks and layout conversions as load_model (every weight
// finite, shapes as the architecture needs, batch norms folded). Errors name `source`.
std::unique_ptr<Model> model_from_state_dict(const std::string& name, StateDict state, const std::string& source);

// The default model: the small Fashion-MNIST Inception trained by `trick train`
// (data/models/fashion_inception.safetensors, compiled into the library), BN folded.
// Needs no file at run time.
std::unique_ptr<Model> load_default_model();
// The embedded weight file's bytes (e.g. for its SHA-256 in summaries).
std::string default_weights_bytes();

}  // namespace trick
