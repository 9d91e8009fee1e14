// Run-time choices for the CUDA backend: who computes convolutions and GEMMs, and in
// which precision. Plain settings with no CUDA dependency, so command-line tools can
// parse and set them in every build (a CPU-only build simply never reads them).
//
//   ConvBackend::Own     our tiled implicit-GEMM kernels (kernels/cuda/conv.cu, gemm.cu)
//   ConvBackend::Cublas  cuBLAS SGEMM: 1x1 convolutions directly, others through an
//                        explicit im2col buffer; also every cuda::gemm
//   ConvBackend::Cudnn   cuDNN v9 convolutions (forward, backward data, backward filter);
//                        cuda::gemm goes to cuBLAS
//
//   MathMode::FP32       fp32 inputs, fp32 accumulation (the reference; the default)
//   MathMode::TF32       lets cuBLAS and cuDNN use TF32 tensor cores (10-bit mantissa
//                        inputs, fp32 accumulation); our own kernels stay fp32
#pragma once
#include <string>

namespace trick {

enum class ConvBackend { Own, Cublas, Cudnn };
enum class MathMode { FP32, TF32 };

void set_conv_backend(ConvBackend b);
ConvBackend conv_backend();
// "own", "cublas" or "cudnn"; throws trick::Error on anything else.
ConvBackend parse_conv_backend(const std::string& s);
const char* conv_backend_name(ConvBackend b);

void set_math_mode(MathMode m);
MathMode math_mode();
// "fp32" or "tf32"; throws trick::Error on anything else.
MathMode parse_math_mode(const std::string& s);
const char* math_mode_name(MathMode m);

// Sets a setting for the lifetime of a scope (tests, benchmarks), restoring the old one.
class ConvBackendScope {
 public:
  explicit ConvBackendScope(ConvBackend b) : saved_(conv_backend()) { set_conv_backend(b); }
  ~ConvBackendScope() { set_conv_backend(saved_); }
  ConvBackendScope(const ConvBackendScope&) = delete;
  ConvBackendScope& operator=(const ConvBackendScope&) = delete;

 private:
  ConvBackend saved_;
};

class MathModeScope {
 public:
  explicit MathModeScope(MathMode m) : saved_(math_mode()) { set_math_mode(m); }
  ~MathModeScope() { set_math_mode(saved_); }
  MathModeScope(const MathModeScope&) = delete;
  MathModeScope& operator=(const MathModeScope&) = delete;

 private:
  MathMode saved_;
};

}  // namespace trick
