// cuBLAS and cuDNN handles, one per device, created on first use (creating a cuDNN handle
// loads its sub-libraries and costs a noticeable fraction of a second, so programs that
// never pick the cuDNN backend never pay it).
#include "kernels/cuda/handles.h"

#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/runtime.h"
#include "tensor/error.h"

namespace trick {
namespace cuda {

namespace {
const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}
}  // namespace

void check_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cublas: ", what, " failed at ", file, ":", line, ": ", cublas_status_name(s));
}

void check_cudnn(cudnnStatus_t s, const char* what, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS) fail("cudnn: ", what, " failed at ", file, ":", line, ": ", cudnnGetErrorString(s));
}

CublasHandle::CublasHandle() { TRICK_CUBLAS_CHECK(cublasCreate(&h_)); }
CublasHandle::~CublasHandle() {
  if (h_) cublasDestroy(h_);
}
CublasHandle::CublasHandle(CublasHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
CublasHandle& CublasHandle::operator=(CublasHandle&& o) noexcept {
  if (this != &o) {
    if (h_) cublasDestroy(h_);
    h_ = std::exchange(o.h_, nullptr);
  }
  return *this;
}

CudnnHandle::CudnnHandle() { TRICK_CUDNN_CHECK(cudnnCreate(&h_)); }
CudnnHandle::~CudnnHandle() {
  if (h_) cudnnDestroy(h_);
}
CudnnHandle::CudnnHandle(CudnnHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
CudnnHandle& CudnnHandle::operator=(CudnnHandle&& o) noexcept {
  if (this != &o) {
    if (h_) cudnnDestroy(h_);
    h_ = std::exchange(o.h_, nullptr);
  }
  return *this;
}

namespace {
// Never destroyed: handles must not be torn down after the CUDA runtime at exit.
template <class H>
H& handle_for(int device) {
  static std::mutex mu;
  static auto* handles = new std::map<int, H>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = handles->find(device);
  if (it == handles->end()) it = handles->emplace(device, H()).first;
  return it->second;
}
}  // namespace

cublasHandle_t cublas() {
  cublasHandle_t h = handle_for<CublasHandle>(current_device()).get();
  TRICK_CUBLAS_CHECK(cublasSetStream(h, stream()));
  return h;
}

cudnnHandle_t cudnn() {
  cudnnHandle_t h = handle_for<CudnnHandle>(current_device()).get();
  TRICK_CUDNN_CHECK(cudnnSetStream(h, stream()));
  return h;
}

}  // namespace cuda
}  // namespace trick
