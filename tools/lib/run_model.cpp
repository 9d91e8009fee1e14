#include "tools/lib/run_model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <new>
#include <numeric>

#include "kernels/cpu/sgemm_conv.h"
#include "models/preprocess.h"
#include "models/zoo.h"
#include "tools/lib/pth.h"
#include "tools/lib/sha256.h"

namespace trick {

namespace {
Device pick_device(const std::string& option) {
  if (option.empty() || option == "auto") {
    if (cuda_available()) return Device::cuda(0);
#ifdef TRICK_WITH_CUDA
    std::fprintf(stderr, "note: %s; running on the CPU\n", cuda_device_problem(0).c_str());
#endif
    return Device::cpu();
  }
  const Device d = parse_device(option);
  if (option == "cuda" && !cuda_available()) {
#ifdef TRICK_WITH_CUDA
    std::fprintf(stderr, "note: --device cuda: %s; running on the CPU\n", cuda_device_problem(0).c_str());
#else
    std::fprintf(stderr, "note: --device cuda: this build of trick has no CUDA support; running on the CPU\n");
#endif
    return Device::cpu();
  }
  if (d.is_cuda()) {
#ifndef TRICK_WITH_CUDA
    fail("--device ", option, ": this build of trick has no CUDA support (rebuild with nvcc installed)");
#endif
    const std::string problem = cuda_device_problem(d.index);  // no driver, no such device, no code for it
    TRICK_CHECK(problem.empty(), "--device ", option, ": ", problem);
  }
  return d;
}
}  // namespace

Device choose_device(const std::string& option) {
  const Device d = pick_device(option);
  if (d.is_cpu() && math_mode() != MathMode::FP32)
    std::fprintf(stderr,
                 "note: --%s on the CPU is emulated (kernels/cpu/tensor_core_emulation.h): convolution and GEMM "
                 "operands rounded as our GPU kernel rounds them for its tensor cores, sums in fp32; slower, not "
                 "faster\n",
                 math_mode_name(math_mode()));
  return d;
}

void fail_if_out_of_memory(const Error& e, const std::string& doing, Device device, const std::string& smaller) {
  const std::string what = e.what();
  if (what.rfind("out of memory", 0) != 0) return;
  fail(what, " while ", doing, ": ", smaller, device.is_cuda() ? ", free the GPU of other work, or use --device cpu" : "");
}

void rethrow_out_of_memory(const Error& e, const std::string& doing, Device device, const std::string& smaller) {
  fail_if_out_of_memory(e, doing, device, smaller);
  throw e;
}

std::unique_ptr<Model> open_frozen(const std::string& what, Device device,
                                   const std::function<std::unique_ptr<Model>()>& load) {
  try {
    std::unique_ptr<Model> m = load();
    m->set_requires_grad(false);
    m->train(false);
    m->to(device);
    return m;
  } catch (const std::bad_alloc&) {
    fail("out of memory: cannot allocate on the host while loading ", what,
         ": close other programs or use a machine with more memory");
  } catch (const Error& e) {
    // The readers prefix their messages with the file name, so "out of memory" may be inside.
    const std::string message = e.what();
    if (message.find("out of memory") == std::string::npos) throw;
    fail(message, " (while loading the model onto ", device.str(),
         "): close other programs or use a machine with more memory",
         device.is_cuda() ? ", free the GPU of other work, or use --device cpu" : "");
  }
}

std::unique_ptr<Model> load_weights(const std::string& weights_path) {
  // Missing, a directory, empty, unreadable: said by the detection, naming the file. Neither
  // format's signature (a photo, a text file): said as such, not as a bad safetensors header.
  const WeightFormat format = detect_weight_format(weights_path);
  if (format == WeightFormat::Unknown)
    fail(weights_path, ": not a PyTorch .pth (zip or legacy pickle) or safetensors file");
  if (format == WeightFormat::Safetensors) return load_model(weights_path);
  StateDictFile pth = load_pth(weights_path);
  StateDict state;
  for (auto& [name, t] : pth.tensors) state[name] = std::move(t);
  const std::string name = model_name_from_keys([&](const std::string& k) { return state.count(k) > 0; });
  if (name.empty())
    fail(weights_path, ": cannot tell which model these weights are for (a .pth state dict without Inception v3's ",
         "tensor names, e.g. Mixed_7c.branch_pool.conv.weight)");
  return model_from_state_dict(name, std::move(state), weights_path);
}

std::unique_ptr<Model> open_model(const std::string& weights_path, Device device) {
  return open_frozen(weights_path, device, [&] { return load_weights(weights_path); });
}

std::unique_ptr<Model> open_default_model(Device device) {
  return open_frozen("the embedded model", device, [] { return load_default_model(); });
}

std::string conv_backend_error(const std::string& name) {
  try {
    parse_conv_backend(name);
    return std::string();
  } catch (const Error&) {
    return "must be own, cublas or cudnn, got '" + name + "'";
  }
}

std::string split_k_error(const std::string& value) {
  try {
    parse_split_k_policy(value);
    return std::string();
  } catch (const Error& e) {
    return e.what();
  }
}

std::string cpu_conv_error(const std::string& value) {
  cpu::ConvEngine e;
  return cpu::parse_conv_engine(value, &e) ? std::string()
                                           : "must be winograd, winograd4, packed or blas, got '" + value + "'";
}

void set_cpu_conv(const std::string& value) {
  cpu::ConvEngine e = cpu::ConvEngine::Winograd;
  TRICK_CHECK(cpu::parse_conv_engine(value, &e), "--cpu-conv ", cpu_conv_error(value));
  cpu::set_conv_engine(e);
  if (cpu::conv_engine() != e)
    std::fprintf(stderr, "note: --cpu-conv %s needs AVX2 and FMA, which this CPU lacks; using blas\n", value.c_str());
}

bool parse_input_size(const std::string& option) {
  if (option == "raw") return true;
  if (option.empty() || option == "model") return false;
  fail("--input-size must be 'raw' (the image already has the model's input size) or 'model', got '", option,
       "'");
}

Tensor model_input(Model& model, const Tensor& image, bool raw) {
  NoGradScope no_grad;
  TRICK_CHECK(image.ndim() == 3 && image.dim(2) == model.input_channels(), "image of shape ", image.shape().str(),
              " for a model taking ", model.input_channels(), " channels");
  const Tensor batch = image.contiguous().reshape(Shape{1, image.dim(0), image.dim(1), image.dim(2)});
  Preprocess p = raw ? Preprocess{} : model.preprocess();
  Var in = apply_preprocess(Var(batch), p, model.input_height(), model.input_width());
  return in.value().to(model.device());
}

Tensor model_input_for(Model& model, const Tensor& image, bool raw, const std::string& path) {
  try {
    return model_input(model, image, raw);
  } catch (const Error& e) {
    const Device dev = model.device();
    fail_if_out_of_memory(e, cat("preparing ", path, " for the model on ", dev.str()), dev, "close other programs");
    fail(path, ": ", e.what());
  }
}

std::vector<ClassScore> top_k(const std::vector<float>& probs, const std::vector<std::string>& names, int k) {
  std::vector<int> idx(probs.size());
  std::iota(idx.begin(), idx.end(), 0);
  k = std::max(0, std::min<int>(k, static_cast<int>(probs.size())));
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
    return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
  });
  std::vector<ClassScore> out;
  for (int i = 0; i < k; ++i)
    out.push_back({idx[i], idx[i] < static_cast<int>(names.size()) ? names[idx[i]] : std::string(), probs[idx[i]]});
  return out;
}

}  // namespace trick

namespace trick {

std::string default_model_sha256() {
  return "embedded:" + sha256_hex(default_weights_bytes());
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TRICK_CHECK(in, "cannot read ", path, ": ", std::strerror(errno));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  TRICK_CHECK(in.eof(), "cannot read ", path);
  return h.hex_digest();
}

}  // namespace trick
