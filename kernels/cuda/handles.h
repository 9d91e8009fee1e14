// cuBLAS and cuDNN handles: created lazily, once per device, owned by move-only RAII
// types, bound to the library stream (kernels/cuda/runtime.h) every time they are handed
// out. Status checks name the call, file and line.
#pragma once
#include <cublas_v2.h>
#ifdef TRICK_WITH_CUDNN  // a CUDA build without cuDNN has no --conv cudnn (CMakeLists.txt)
#include <cudnn.h>
#endif

namespace trick {
namespace cuda {

class CublasHandle {
 public:
  CublasHandle();  // creates
  ~CublasHandle();
  CublasHandle(CublasHandle&& o) noexcept;
  CublasHandle& operator=(CublasHandle&& o) noexcept;
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

#ifdef TRICK_WITH_CUDNN
class CudnnHandle {
 public:
  CudnnHandle();
  ~CudnnHandle();
  CudnnHandle(CudnnHandle&& o) noexcept;
  CudnnHandle& operator=(CudnnHandle&& o) noexcept;
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  cudnnHandle_t get() const { return h_; }

 private:
  cudnnHandle_t h_ = nullptr;
};
#endif

// The current device's handle, on stream().
cublasHandle_t cublas();
void check_cublas(cublasStatus_t s, const char* what, const char* file, int line);
#ifdef TRICK_WITH_CUDNN
cudnnHandle_t cudnn();
void check_cudnn(cudnnStatus_t s, const char* what, const char* file, int line);
#endif

}  // namespace cuda
}  // namespace trick

#define TRICK_CUBLAS_CHECK(call) ::trick::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define TRICK_CUDNN_CHECK(call) ::trick::cuda::check_cudnn((call), #call, __FILE__, __LINE__)
