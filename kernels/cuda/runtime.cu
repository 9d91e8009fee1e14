// CUDA runtime glue shared by the CUDA kernels: status checks with file and line.
#include "kernels/cuda/runtime.h"

namespace trick {
namespace cuda {

void check_status(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) fail("cuda: ", what, " failed at ", file, ":", line, ": ", cudaGetErrorString(e));
}

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail("cuda: launch of ", kernel, " failed at ", file, ":", line, ": ", cudaGetErrorString(e));
}

}  // namespace cuda
}  // namespace trick
