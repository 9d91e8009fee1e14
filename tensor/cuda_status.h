// A failed CUDA call's status in the words of an error line. Most errors concern the call;
// after a kernel fault the process's CUDA context is lost for good ("sticky": every later
// call fails the same way, driver_types.h), and the user needs to know that the run cannot
// go on and what to do next.
#pragma once

#include <cuda_runtime.h>

#include <string>

namespace trick {

// The errors after which "any further CUDA work will return the same error" and "the
// process must be terminated and relaunched" (driver_types.h), and an uncorrectable ECC
// error, which stops the context as surely.
inline bool cuda_context_lost(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

inline std::string cuda_status_text(cudaError_t e) {
  std::string s = cudaGetErrorString(e);
  if (cuda_context_lost(e))
    s += " (a kernel faulted, from a bug in it or a fault of the GPU or its driver; nothing more can run on the GPU "
         "in this process. Run again, or with --device cpu; CUDA_LAUNCH_BLOCKING=1 names the kernel, "
         "compute-sanitizer the fault)";
  return s;
}

}  // namespace trick
