// cuBLAS and cuDNN handles, one per device, created on first use (creating a cuDNN handle
// loads its sub-libraries and costs a noticeable fraction of a second, so programs that
// never pick the cuDNN backend never pay it).
#include "kernels/cuda/handles.h"

#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/lazy_libs.h"
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

// A call into a library that cannot be loaded returns NOT_INITIALIZED (lazy_libs.cpp): then
// the loader's own error, which says why, is the one reported.
void check_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  cublas_library().require();
  fail("cublas: ", what, " failed at ", file, ":", line, ": ", cublas_status_name(s));
}

#ifdef TRICK_WITH_CUDNN
void check_cudnn(cudnnStatus_t s, const char* what, const char* file, int line) {
  if (s == CUDNN_STATUS_SUCCESS) return;
  cudnn_library().require();
  fail("cudnn: ", what, " failed at ", file, ":", line, ": ", cudnnGetErrorString(s));
}
#endif

CublasHandle::CublasHandle() {
  cublas_library().require();  // loads it (lazy_libs.h), or says why it cannot
  TRICK_CUBLAS_CHECK(cublasCreate(&h_));
}
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

#ifdef TRICK_WITH_CUDNN
CudnnHandle::CudnnHandle() {
  cudnn_library().require();
  TRICK_CUDNN_CHECK(cudnnCreate(&h_));
}
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
#endif

namespace {
// Never destroyed: handles must not be torn down after the CUDA runtime at exit.
template <class H>
H& handle_for(int device, const char* library) {
  static std::mutex mu;
  static auto* handles = new std::map<int, H>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = handles->find(device);
  if (it == handles->end()) {
    // Creating a handle allocates and synchronises: inside a capture it would fail the capture
    // with no word of why.
    TRICK_CHECK(!stream_capturing(), library, ": first use on cuda:", device,
                " inside a CUDA graph capture (its handle cannot be created then); run the work eagerly once first");
    it = handles->emplace(device, H()).first;
  }
  return it->second;
}
}  // namespace

namespace {
// NVIDIA's recommended cuBLAS workspace on Hopper (PyTorch's default there too).
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

// One fixed workspace per device, allocated on first use and never freed or moved, so a
// captured graph's cuBLAS calls can always use the address they recorded.
void* cublas_workspace(int device) {
  static std::mutex mu;
  static auto* buffers = new std::map<int, DeviceBuffer>();  // never destroyed (see handle_for)
  std::lock_guard<std::mutex> lock(mu);
  auto it = buffers->find(device);
  if (it == buffers->end()) {
    TRICK_CHECK(!stream_capturing(), "cublas: first use on cuda:", device,
                " inside a CUDA graph capture (its workspace cannot be allocated then); run the work eagerly once first");
    it = buffers->emplace(device, DeviceBuffer(kCublasWorkspaceBytes)).first;
  }
  return it->second.data();
}
}  // namespace

cublasHandle_t cublas() {
  const int device = current_device();
  cublasHandle_t h = handle_for<CublasHandle>(device, "cublas").get();
  TRICK_CUBLAS_CHECK(cublasSetStream(h, stream()));
  // cublasSetStream puts the handle back on cuBLAS's own workspace pool, which it serves
  // differently during a graph capture (stream-ordered allocations) than eagerly: our fixed
  // workspace makes captured and eager calls the same configuration, so the same kernels and
  // the same bits, with nothing allocated inside a capture.
  TRICK_CUBLAS_CHECK(cublasSetWorkspace(h, cublas_workspace(device), kCublasWorkspaceBytes));
  return h;
}

#ifdef TRICK_WITH_CUDNN
cudnnHandle_t cudnn() {
  cudnnHandle_t h = handle_for<CudnnHandle>(current_device(), "cudnn").get();
  TRICK_CUDNN_CHECK(cudnnSetStream(h, stream()));
  return h;
}
#endif

}  // namespace cuda
}  // namespace trick
