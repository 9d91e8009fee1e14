// trick info: what this build can do (backends, devices, threads, image formats).
#include <cstdio>
#include <string>

#include "kernels/cpu/sgemm_conv.h"
#include "kernels/gemm.h"
#ifdef TRICK_WITH_CUDA
#include "kernels/cuda/lazy_libs.h"
#include "kernels/cuda/runtime.h"
#endif
#include "tensor/cpu_check.h"
#include "tensor/tensor.h"
#include "tools/command.h"
#include "tools/lib/image.h"

namespace trick::cmd_info {
namespace {

const bool registered =
    register_command({"info", "Show this build's backends, devices, threads and image formats",
                      [](CLI::App&) {
                        return [] {
#ifdef TRICK_WITH_CUDA
                          const char* cuda = "compiled (CUDA runtime linked in; cuBLAS and cuDNN loaded on first use)";
#else
                          const char* cuda = "not compiled";
#endif
                          std::printf("trick 0.1.0\n");
                          std::printf("cpu threads: %d\n", num_threads());
                          std::string isa;
                          for (const std::string& f : built_cpu_features()) isa += " " + f;
                          std::printf("cpu instruction sets built for:%s\n",
                                      isa.empty() ? " the compiler's default target (TRICK_NATIVE=OFF)" : isa.c_str());
                          std::printf(
                              "cpu convolutions: %s (--cpu-conv or TRICK_CPU_CONV: "
                              "winograd, winograd4, packed, blas)\n",
                              cpu::conv_engine_name());
                          std::printf("images: %s\n", image_decoders().c_str());
                          std::printf("cuda backend: %s\n", cuda);
                          std::printf("cuda devices: %d\n", cuda_device_count());
#ifdef TRICK_WITH_CUDA
                          std::printf("cuda architectures built for: %s\n", cuda::built_architectures());
                          for (int d = 0; d < cuda_device_count(); ++d) {
                            const std::string problem = cuda_device_problem(d);
                            std::printf("cuda:%d: %s\n", d,
                                        problem.empty() ? "runs this build's kernels" : problem.c_str());
                          }
                          for (auto* lib : {&cuda::cublas_library(), &cuda::cudnn_library()}) {
                            const std::string path = lib->path();
                            std::printf("%s: %s\n", lib->name().c_str(),
                                        path.empty() ? ("cannot be loaded: " + lib->error()).c_str() : path.c_str());
                          }
#endif
                          return 0;
                        };
                      },
                      90});

}  // namespace
}  // namespace trick::cmd_info
