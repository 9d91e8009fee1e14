#include "models/zoo.h"

#include <cmath>
#include <cstring>

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

namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// A NaN or Inf weight makes every output NaN (or silently wrong, where a ReLU or max-pool
// hides it): refuse the file naming the tensor, rather than print NaN probabilities later.
void check_finite(const std::string& name, const Tensor& t) {
  const float* p = t.data();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i]))
      fail("tensor '", name, "' has ", std::isnan(p[i]) ? "a NaN" : p[i] > 0 ? "+Inf" : "-Inf", " at element ", i,
           " (weights must be finite: a damaged file, or training that diverged)");
}

}  // namespace

StateDict read_all(const SafetensorsFile& f) {
  StateDict sd;
  for (const std::string& name : f.names()) {
    const SafetensorsInfo& info = f.info(name);
    if (!info.is_float()) {
      // Integers hold bookkeeping (num_batches_tracked, an optimiser's step), left out; a
      // weight stored as integers would otherwise be reported as "missing".
      if (ends_with(name, "num_batches_tracked") || name.rfind("optim.", 0) == 0) continue;
      fail("tensor '", name, "' has dtype ", info.dtype, "; weights must be F32, F16, BF16 or F64");
    }
    sd[name] = f.read_f32(name);
    check_finite(name, sd[name]);
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
    if (std::string(e.what()).rfind(weights_path + ": ", 0) == 0) throw;  // already names the file
    fail(weights_path, ": ", e.what());
  }
  fail(weights_path, ": unknown model '", name, "' (known: inception_v3)");
}

}  // namespace trick
