// An empty kernel built for exactly one architecture, SASS only (tests/cuda_arch_probe.cu,
// compiled twice by CMakeLists.txt: 80-real and 90-real). SASS runs only on GPUs of its own
// major version, so on any GPU at least one of the two has no code, which is how the test of
// kernels/cuda/runtime.h's kernel_problem gets a kernel the GPU cannot run.
#pragma once

namespace trick::test_cuda {
const void* probe_kernel_sm80();
const void* probe_kernel_sm90();
}  // namespace trick::test_cuda
