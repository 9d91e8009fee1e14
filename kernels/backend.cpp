// The CUDA backend's run-time settings (see kernels/backend.h).
#include "kernels/backend.h"

#include <atomic>
#include <stdexcept>

#include "tensor/error.h"

namespace trick {

namespace {
// Atomics: a setting may be read by a worker thread while the main thread parses options.
std::atomic<ConvBackend>& backend_setting() {
  static std::atomic<ConvBackend> b{ConvBackend::Own};
  return b;
}
std::atomic<MathMode>& math_setting() {
  static std::atomic<MathMode> m{MathMode::FP32};
  return m;
}
std::atomic<int64_t>& im2col_cap_setting() {
  static std::atomic<int64_t> c{int64_t{1} << 25};
  return c;
}
std::atomic<CudnnAlgo>& cudnn_algo_setting() {
  static std::atomic<CudnnAlgo> a{CudnnAlgo::Measure};
  return a;
}
std::atomic<SplitKPolicy>& split_k_setting() {
  static std::atomic<SplitKPolicy> p{SplitKPolicy{}};
  return p;
}
void check_split_k(const SplitKPolicy& p, const std::string& what) {
  TRICK_CHECK(p.warps_per_sm >= 0 && p.warps_per_sm <= 64 && p.min_k >= 1, "split-K policy", what,
              ": warps per multiprocessor must be in [0, 64] and min k >= 1");
}
}  // namespace

void set_split_k_policy(SplitKPolicy p) {
  check_split_k(p, cat(" ", p.warps_per_sm, ",", p.min_k));
  split_k_setting().store(p);
}
SplitKPolicy split_k_policy() { return split_k_setting().load(); }

SplitKPolicy parse_split_k_policy(const std::string& s) {
  if (s == "off") return SplitKPolicy{0, 1};
  const size_t comma = s.find(',');
  SplitKPolicy p;
  try {
    if (comma == std::string::npos) throw std::invalid_argument(s);
    const std::string w = s.substr(0, comma), k = s.substr(comma + 1);
    size_t used_w = 0, used_k = 0;
    p.warps_per_sm = std::stoi(w, &used_w);
    p.min_k = std::stoi(k, &used_k);
    if (used_w != w.size() || used_k != k.size()) throw std::invalid_argument(s);
  } catch (const std::logic_error&) {
    fail("split-K policy: '", s, "' is not W,K (warps per multiprocessor, min k) or off");
  }
  check_split_k(p, cat(" '", s, "'"));
  return p;
}

void set_cudnn_algo(CudnnAlgo a) { cudnn_algo_setting().store(a); }
CudnnAlgo cudnn_algo() { return cudnn_algo_setting().load(); }

CudnnAlgo parse_cudnn_algo(const std::string& s) {
  if (s == "measure") return CudnnAlgo::Measure;
  if (s == "heuristic") return CudnnAlgo::Heuristic;
  fail("cuDNN algorithm choice: unknown '", s, "' (expected measure or heuristic)");
}

const char* cudnn_algo_name(CudnnAlgo a) { return a == CudnnAlgo::Heuristic ? "heuristic" : "measure"; }

void set_im2col_cap(int64_t floats) {
  TRICK_CHECK(floats >= 1, "im2col cap: ", floats, " floats must be >= 1");
  im2col_cap_setting().store(floats);
}
int64_t im2col_cap() { return im2col_cap_setting().load(); }

void set_conv_backend(ConvBackend b) { backend_setting().store(b); }
ConvBackend conv_backend() { return backend_setting().load(); }

ConvBackend parse_conv_backend(const std::string& s) {
  if (s == "own") return ConvBackend::Own;
  if (s == "cublas") return ConvBackend::Cublas;
  if (s == "cudnn") return ConvBackend::Cudnn;
  fail("conv backend: unknown '", s, "' (expected own, cublas or cudnn)");
}

const char* conv_backend_name(ConvBackend b) {
  switch (b) {
    case ConvBackend::Own: return "own";
    case ConvBackend::Cublas: return "cublas";
    case ConvBackend::Cudnn: return "cudnn";
  }
  return "?";
}

void set_math_mode(MathMode m) { math_setting().store(m); }
MathMode math_mode() { return math_setting().load(); }

MathMode parse_math_mode(const std::string& s) {
  if (s == "fp32") return MathMode::FP32;
  if (s == "tf32") return MathMode::TF32;
  if (s == "bf16") return MathMode::BF16;
  fail("math mode: unknown '", s, "' (expected fp32, tf32 or bf16)");
}

const char* math_mode_name(MathMode m) {
  switch (m) {
    case MathMode::FP32: return "fp32";
    case MathMode::TF32: return "tf32";
    case MathMode::BF16: return "bf16";
  }
  return "?";
}

}  // namespace trick
