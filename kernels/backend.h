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
#include <cstdint>
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

// The largest im2col buffer (floats) the Cublas conv path uses per chunk of whole images,
// unless one image needs more: default 2^25 (128 MiB). Tests set it small to run the
// multi-chunk path on small shapes. Must be >= 1.
void set_im2col_cap(int64_t floats);
int64_t im2col_cap();

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

class Im2colCapScope {
 public:
  explicit Im2colCapScope(int64_t floats) : saved_(im2col_cap()) { set_im2col_cap(floats); }
  ~Im2colCapScope() { set_im2col_cap(saved_); }
  Im2colCapScope(const Im2colCapScope&) = delete;
  Im2colCapScope& operator=(const Im2colCapScope&) = delete;

 private:
  int64_t saved_;
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
