// Status checks for CUDA calls and kernel launches (llm.c's cudaCheck, with the op named).
#pragma once
#include <cuda_runtime.h>

#include "tensor/error.h"

namespace trick {
namespace cuda {

void check_status(cudaError_t e, const char* what, const char* file, int line);
void check_launch(const char* kernel, const char* file, int line);

}  // namespace cuda
}  // namespace trick

#define TRICK_CUDA_CHECK(call) ::trick::cuda::check_status((call), #call, __FILE__, __LINE__)
#define TRICK_CUDA_LAUNCHED(kernel) ::trick::cuda::check_launch(#kernel, __FILE__, __LINE__)
