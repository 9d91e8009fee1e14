// The CUDA backend's run-time settings (see kernels/backend.h).
#include "kernels/backend.h"

#include <atomic>

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
}  // namespace

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
  fail("math mode: unknown '", s, "' (expected fp32 or tf32)");
}

const char* math_mode_name(MathMode m) { return m == MathMode::TF32 ? "tf32" : "fp32"; }

}  // namespace trick
