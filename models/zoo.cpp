#include "models/zoo.h"

#include "models/inception_v3.h"
#include "models/safetensors.h"
#include "tensor/random.h"

namespace trick {

std::unique_ptr<Model> random_model(const std::string& name, uint64_t seed) {
  Rng rng(seed);
  if (name == "inception_v3") {
    auto m = std::make_unique<InceptionV3>();
    for (auto& [n, p] : m->named_parameters()) {
      Tensor& v = p->mutable_value();
      if (n.size() > 12 && n.compare(n.size() - 12, 12, ".conv.weight") == 0) {
        const float fan_in = static_cast<float>(v.numel() / v.dim(0));
        v.copy_from(randn(v.shape(), rng, std::sqrt(2.f / fan_in)));
      } else if (n == "fc.weight") {
        v.copy_from(randn(v.shape(), rng, 0.01f));
      }
    }
    m->fold_batch_norms();
    return m;
  }
  fail("unknown model '", name, "' (known: inception_v3)");
}

std::string model_name_of(const SafetensorsFile& f) {
  auto it = f.metadata().find("model");
  if (it != f.metadata().end() && it->second != "unknown") return it->second;
  if (f.contains("Mixed_7c.branch_pool.conv.weight")) return "inception_v3";  // torchvision or timm keys
  fail(f.path(), ": cannot tell which model these weights are for (no \"model\" in the metadata and no ",
       "known tensor names)");
}

StateDict read_all(const SafetensorsFile& f) {
  StateDict sd;
  for (const std::string& name : f.names()) {
    const SafetensorsInfo& info = f.info(name);
    if (!info.is_float()) continue;  // e.g. int64 num_batches_tracked
    sd[name] = f.read_f32(name);
  }
  return sd;
}

std::unique_ptr<Model> load_model(const std::string& weights_path) {
  const SafetensorsFile f = SafetensorsFile::open(weights_path);
  const std::string name = model_name_of(f);
  try {
    if (name == "inception_v3") {
      auto m = std::make_unique<InceptionV3>();
      m->load_torchvision(read_all(f));
      return m;
    }
  } catch (const Error& e) {
    fail(weights_path, ": ", e.what());
  }
  fail(weights_path, ": unknown model '", name, "' (known: inception_v3)");
}

}  // namespace trick
