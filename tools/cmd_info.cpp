// trick info: what this build can do (backends, devices, threads).
#include <cstdio>
#include <string>

#include "kernels/cpu/sgemm_conv.h"
#include "kernels/gemm.h"
#include "tensor/cpu_check.h"
#include "tensor/tensor.h"
#include "tools/command.h"

namespace trick::cmd_info {
namespace {

const bool registered = register_command({"info", "Show this build's backends, devices and threads",
                                          [](CLI::App&) {
                                            return [] {
#ifdef TRICK_WITH_CUDA
                                              const char* cuda = "compiled";
#else
                                              const char* cuda = "not compiled";
#endif
                                              std::printf("trick 0.1.0\n");
                                              std::printf("cpu threads: %d\n", num_threads());
                                              std::string isa;
                                              for (const std::string& f : built_cpu_features()) isa += " " + f;
                                              std::printf("cpu instruction sets built for:%s\n",
                                                          isa.empty() ? " the compiler's default target (TRICK_NATIVE=OFF)" : isa.c_str());
                                              std::printf("cpu convolutions: %s (--cpu-conv or TRICK_CPU_CONV: "
                                                          "winograd, winograd4, packed, blas)\n",
                                                          cpu::conv_engine_name());
                                              std::printf("cuda backend: %s\n", cuda);
                                              std::printf("cuda devices: %d\n", cuda_device_count());
                                              return 0;
                                            };
                                          },
                                          90});

}  // namespace
}  // namespace trick::cmd_info
