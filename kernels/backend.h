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
//   MathMode::TF32       TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation) in
//                        cuBLAS, cuDNN and our tiled kernel (conv forward, dgrad, wgrad
//                        and GEMMs: igemm_tc_kernel); our other kernels stay fp32
//   MathMode::BF16       bf16 tensor cores (8-bit significand inputs, fp32 accumulation) in
//                        our tiled kernel and cuBLAS (CUBLAS_COMPUTE_32F_FAST_16BF); cuDNN
//                        has no such mode for fp32 tensors, so ConvBackend::Cudnn refuses it.
//                        Tensors stay fp32 in memory: only the products' inputs are rounded
#pragma once
#include <cstdint>
#include <string>

namespace trick {

enum class ConvBackend { Own, Cublas, Cudnn };
enum class MathMode { FP32, TF32, BF16 };

void set_conv_backend(ConvBackend b);
ConvBackend conv_backend();
// "own", "cublas" or "cudnn"; throws trick::Error on anything else.
ConvBackend parse_conv_backend(const std::string& s);
const char* conv_backend_name(ConvBackend b);

void set_math_mode(MathMode m);
MathMode math_mode();
// "fp32", "tf32" or "bf16"; throws trick::Error on anything else.
MathMode parse_math_mode(const std::string& s);
const char* math_mode_name(MathMode m);

// The largest im2col buffer (floats) the Cublas conv path uses per chunk of whole images,
// unless one image needs more: default 2^25 (128 MiB). Tests set it small to run the
// multi-chunk path on small shapes. Must be >= 1.
void set_im2col_cap(int64_t floats);
int64_t im2col_cap();

// Split-K for our tiled kernel (kernels/cuda/igemm.h, SplitKProblem): a conv forward,
// dgrad or GEMM whose grid gives the GPU fewer than warps_per_sm warps per multiprocessor
// splits its reduction into ranges of at least min_k (rounded up to whole stages) and
// adds the partial sums in a second pass, in a fixed order. warps_per_sm = 0 turns it
// off. Default {8, 64}; tests lower min_k to split small shapes.
struct SplitKPolicy {
  int warps_per_sm = 8;
  int min_k = 64;
};
void set_split_k_policy(SplitKPolicy p);
SplitKPolicy split_k_policy();
// "W,K" (warps per multiprocessor, min k) or "off"; throws trick::Error on anything else.
SplitKPolicy parse_split_k_policy(const std::string& s);

// How the cuDNN backend chooses an algorithm for a layer shape, once per shape:
//   Measure    times cuDNN's candidates (cudnnFind*, as PyTorch's cudnn.benchmark) and
//              takes the fastest; the default. Not while a CUDA graph is being captured
//              (Heuristic then), and Heuristic when cuDNN cannot measure.
//   Heuristic  the first of cuDNN's ranking (cudnnGet*_v7), nothing run.
// Either way only deterministic algorithms that fit the math mode and a 1 GiB workspace.
enum class CudnnAlgo { Measure, Heuristic };
void set_cudnn_algo(CudnnAlgo a);
CudnnAlgo cudnn_algo();
// "measure" or "heuristic"; throws trick::Error on anything else.
CudnnAlgo parse_cudnn_algo(const std::string& s);
const char* cudnn_algo_name(CudnnAlgo a);

// Sets a setting for the lifetime of a scope (tests, benchmarks), restoring the old one.
template <typename T, T (*Get)(), void (*Set)(T)>
class SettingScope {
 public:
  explicit SettingScope(T value) : saved_(Get()) { Set(value); }
  ~SettingScope() { Set(saved_); }
  SettingScope(const SettingScope&) = delete;
  SettingScope& operator=(const SettingScope&) = delete;

 private:
  T saved_;
};
using ConvBackendScope = SettingScope<ConvBackend, conv_backend, set_conv_backend>;
using MathModeScope = SettingScope<MathMode, math_mode, set_math_mode>;
using Im2colCapScope = SettingScope<int64_t, im2col_cap, set_im2col_cap>;
using SplitKScope = SettingScope<SplitKPolicy, split_k_policy, set_split_k_policy>;
using CudnnAlgoScope = SettingScope<CudnnAlgo, cudnn_algo, set_cudnn_algo>;

}  // namespace trick
