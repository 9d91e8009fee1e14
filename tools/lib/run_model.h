// What the commands share around a model: choosing the device, opening the weights,
// turning image files into model input, and reading out the top classes.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "models/model.h"

namespace trick {

// "auto" (CUDA when a GPU is usable, else the CPU, saying so on stderr when CUDA was
// compiled but no device answers), "cpu", "cuda", "cuda:N". Plain "cuda" without a usable
// GPU (none, no driver, or a build without CUDA) also runs on the CPU, saying so on stderr;
// "cuda:N" names a device and fails when it is not there. On the CPU with --tf32 or --bf16,
// says on stderr that the mode is emulated (kernels/cpu/tensor_core_emulation.h).
Device choose_device(const std::string& option);

// "" when `name` is a conv backend (own, cublas, cudnn), else what is wrong with it.
std::string conv_backend_error(const std::string& name);
// "" when `value` is a split-K policy ("W,K" or "off"), else what is wrong with it.
std::string split_k_error(const std::string& value);
// "" when `value` names a CPU convolution engine (winograd, winograd4, packed, blas), else what is wrong.
std::string cpu_conv_error(const std::string& value);
// Selects that engine (kernels/cpu/sgemm_conv.h); on a CPU without AVX2/FMA, where only blas
// runs, says so on stderr.
void set_cpu_conv(const std::string& value);

// --cpu-conv alone: for the commands that run on the CPU only (train, eval).
template <class App>
void add_cpu_conv_option(App& app) {
  app.template add_option_function<std::string>(
         "--cpu-conv", [](const std::string& v) { set_cpu_conv(v); },
         "CPU convolutions: winograd (the default: implicit GEMM on AVX2, and Winograd F(2x2,3x3) for 3x3 "
         "stride-1 layers of many pixels, as exact as direct), winograd4 (F(4x4,3x3) on the larger of those: "
         "faster, less exact, Inception's logits ~3e-5 from fp64 against ~1.2e-5), packed (implicit GEMM only) or "
         "blas (im2col + OpenBLAS)")
      ->check([](const std::string& v) { return cpu_conv_error(v); });
}

// The backend options of every command that runs a model, added in one line:
//   --cpu-conv winograd|winograd4|packed|blas  the CPU's convolution engine (default winograd; also
//                            TRICK_CPU_CONV in the environment)
//   --conv own|cublas|cudnn  who computes convolutions (kernels/backend.h), set as the
//                            command line is parsed
//   --tf32                   TF32 tensor cores in convolutions and GEMMs, every backend (off by default;
//                            emulated on the CPU: kernels/cpu/tensor_core_emulation.h)
//   --bf16                   bf16 tensor cores there, our kernels and cuBLAS (off; excludes --tf32; emulated
//                            on the CPU too)
//   --split-k W,K|off        our kernels' split-K policy (kernels/backend.h; default 8,64)
//   --cudnn-algo measure|heuristic  how the cuDNN backend picks algorithms (default measure)
//   --graph / --no-graph     only when `graph` is given: CUDA-graph replay, stored there
// The GPU ones but --tf32 and --bf16 change nothing on the CPU. math = false leaves out --tf32
// and --bf16 (for a command that sets the math mode itself). A template: this header needs no CLI11.
template <class App>
void add_backend_options(App& app, bool* graph = nullptr, bool math = true) {
  add_cpu_conv_option(app);
  app.template add_option_function<std::string>(
         "--conv", [](const std::string& v) { set_conv_backend(parse_conv_backend(v)); },
         "GPU convolutions: own (our kernels, the default), cublas or cudnn")
      ->check([](const std::string& v) { return conv_backend_error(v); });
  app.template add_option_function<std::string>(
         "--split-k", [](const std::string& v) { set_split_k_policy(parse_split_k_policy(v)); },
         "GPU, our kernels: split a convolution's or GEMM's reduction when its grid gives fewer than W warps per "
         "multiprocessor, into ranges of at least K: W,K (default 8,64) or off")
      ->check([](const std::string& v) { return split_k_error(v); });
  app.template add_option_function<std::string>(
         "--cudnn-algo", [](const std::string& v) { set_cudnn_algo(parse_cudnn_algo(v)); },
         "GPU, --conv cudnn: choose each layer's algorithm by timing cuDNN's candidates once (measure, the default, "
         "as PyTorch's cudnn.benchmark) or by cuDNN's heuristic ranking (heuristic)")
      ->check([](const std::string& v) {
        return v == "measure" || v == "heuristic" ? std::string() : "must be measure or heuristic, got '" + v + "'";
      });
  if (math) {
    auto* tf32 = app.add_flag_callback(
        "--tf32", [] { set_math_mode(MathMode::TF32); },
        "GPU: TF32 tensor cores for convolutions and GEMMs (our kernels, cuBLAS or cuDNN): faster, less exact "
        "(`trick precision` measures how much); on the CPU emulated, to see the error without a GPU");
    app.add_flag_callback(
           "--bf16", [] { set_math_mode(MathMode::BF16); },
           "GPU: bf16 tensor cores for convolutions and GEMMs (our kernels or cuBLAS; not cuDNN): tensors stay "
           "fp32, the products' inputs are rounded to bf16; fastest, least exact; on the CPU emulated")
        ->excludes(tf32);
  }
  if (graph)
    app.add_flag("--graph,!--no-graph", *graph,
                 "GPU: replay each step from one CUDA graph (the default); --no-graph runs eagerly, for debugging");
}

// An out-of-memory error ("out of memory: ...") gets what was being done ("attacking a batch
// of 64 images (299x299 on cuda:0)") and what to do instead (`smaller`, plus freeing the GPU
// or the CPU when on a GPU); any other error is rethrown as it is. The batch is never shrunk
// silently: that would change what was asked and how long it takes.
[[noreturn]] void rethrow_out_of_memory(const Error& e, const std::string& doing, Device device,
                                        const std::string& smaller);
// The same for an out-of-memory error; returns on any other.
void fail_if_out_of_memory(const Error& e, const std::string& doing, Device device, const std::string& smaller);

// Reads a model from a weight file: safetensors (models/zoo.h's load_model), or a PyTorch
// .pth state dict (zip or legacy, read by tools/lib/pth.h, the architecture recognised from
// its keys), converted in memory as `trick convert` would convert it.
std::unique_ptr<Model> load_weights(const std::string& weights_path);
// `load`'s model, frozen (no parameter requires a gradient, eval mode), on `device`; out of
// memory while loading (`what`: a file, "the embedded model") or moving it said as such.
std::unique_ptr<Model> open_frozen(const std::string& what, Device device,
                                   const std::function<std::unique_ptr<Model>()>& load);
// load_weights, frozen, on device.
std::unique_ptr<Model> open_model(const std::string& weights_path, Device device);
// The model embedded in the binary (the small Inception trained on Fashion-MNIST), likewise.
std::unique_ptr<Model> open_default_model(Device device);
// "embedded:<SHA-256 of the embedded weight file>"
std::string default_model_sha256();

// The model input for one decoded image (H, W, C) in [0, 1]: the model's evaluation
// transform, or none with raw = true (the image must then have the input size already).
// Returns (1, h, w, c) on the model's device, without gradient tracking.
Tensor model_input(Model& model, const Tensor& image, bool raw);
// model_input for the command line: an image the model cannot take is one error line naming
// `path`; running out of memory says it was preparing `path` on the model's device.
Tensor model_input_for(Model& model, const Tensor& image, bool raw, const std::string& path);

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
