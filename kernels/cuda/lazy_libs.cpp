// cuBLAS and cuDNN loaded on first use (see lazy_libs.h): the loader, and every function of
// theirs that trick calls, defined here as a forwarder to the library's own.
#include "kernels/cuda/lazy_libs.h"

#include <cublas_v2.h>
#ifdef TRICK_WITH_CUDNN
#include <cudnn.h>
#endif
#include <dlfcn.h>
#include <link.h>

#include <mutex>

#include "kernels/cuda/runtime.h"
#include "tensor/error.h"

#ifndef TRICK_CUBLAS_DIR
#define TRICK_CUBLAS_DIR ""
#endif
#ifndef TRICK_CUDNN_DIR
#define TRICK_CUDNN_DIR ""
#endif

#define TRICK_LAZY_STR2(x) #x
#define TRICK_LAZY_STR(x) TRICK_LAZY_STR2(x)

namespace trick {
namespace cuda {

namespace {
std::mutex& load_mutex() {
  static std::mutex mu;
  return mu;
}

// The soname a build against these headers needs, then the same file in the folder the
// build found the library in (CMake's), where the system's cache may not look.
std::vector<std::string> candidates(const std::string& soname, const std::string& dir) {
  std::vector<std::string> out{soname};
  if (!dir.empty()) out.push_back(dir + "/" + soname);
  return out;
}
// On the CUDA emulator the real libraries would load but find no GPU (cublasCreate: "not
// initialized"): they are not offered there, with this reason.
constexpr const char* kEmulated =
    "the CUDA emulator (trick_emu) runs this build's own kernels on the CPU, and cuBLAS and cuDNN need a real GPU";
constexpr const char* kEmulatedHint = "use --conv own here, or trick on a machine with a GPU";

LazyLibrary* library(const char* what, std::vector<std::string> files, const char* hint) {
  if (emulated()) return new LazyLibrary(what, {}, kEmulatedHint, kEmulated);
  return new LazyLibrary(what, std::move(files), hint);
}
}  // namespace

LazyLibrary::LazyLibrary(std::string what, std::vector<std::string> candidates, std::string hint, std::string absent)
    : what_(std::move(what)), hint_(std::move(hint)), absent_(std::move(absent)), candidates_(std::move(candidates)) {}

void* LazyLibrary::handle() {
  std::lock_guard<std::mutex> lock(load_mutex());
  if (!tried_) {
    tried_ = true;
    if (candidates_.empty()) error_ = absent_;
    for (const std::string& c : candidates_) {
      // RTLD_GLOBAL, as when linked: cuDNN loads its sub-libraries itself.
      handle_ = dlopen(c.c_str(), RTLD_NOW | RTLD_GLOBAL);
      if (handle_) break;
      const char* e = dlerror();
      error_ += (error_.empty() ? "" : "; ") + std::string(e ? e : c + ": dlopen failed");
    }
  }
  return handle_;
}

void LazyLibrary::require() {
  if (handle()) return;
  fail(what_, " cannot be loaded: ", error(), "; ", hint_);
}

std::string LazyLibrary::path() {
  void* h = handle();
  link_map* map = nullptr;
  if (!h || dlinfo(h, RTLD_DI_LINKMAP, &map) != 0 || !map || !map->l_name) return std::string();
  return map->l_name;
}

std::string LazyLibrary::error() {
  if (handle()) return std::string();
  std::lock_guard<std::mutex> lock(load_mutex());
  return error_;
}

void* LazyLibrary::symbol(const char* name) {
  void* h = handle();
  return h ? dlsym(h, name) : nullptr;
}

LazyLibrary& cublas_library() {
  static LazyLibrary* lib = library(  // never destroyed: used until exit
      "cuBLAS (--conv cublas)", candidates("libcublas.so." TRICK_LAZY_STR(CUBLAS_VER_MAJOR), TRICK_CUBLAS_DIR),
      "install CUDA's cuBLAS " TRICK_LAZY_STR(CUBLAS_VER_MAJOR) " or put its folder in LD_LIBRARY_PATH; "
      "--conv own needs neither cuBLAS nor cuDNN");
  return *lib;
}

LazyLibrary& cudnn_library() {
#ifdef TRICK_WITH_CUDNN
  static LazyLibrary* lib = library(
      "cuDNN (--conv cudnn)", candidates("libcudnn.so." TRICK_LAZY_STR(CUDNN_MAJOR), TRICK_CUDNN_DIR),
      "install cuDNN " TRICK_LAZY_STR(CUDNN_MAJOR) " or put its folder in LD_LIBRARY_PATH; "
      "--conv own needs neither cuBLAS nor cuDNN");
#else  // nothing to load: no forwarders were compiled (CMakeLists.txt, TRICK_WITH_CUDNN)
  static LazyLibrary* lib = new LazyLibrary(
      "cuDNN (--conv cudnn)", {},
      "CMake found no cudnn.h when trick was built: install cuDNN 9 with its headers and build trick again; "
      "--conv own and --conv cublas need no cuDNN");
#endif
  return *lib;
}

std::vector<std::string> missing_functions(LazyLibrary& lib, const std::vector<const char*>& names) {
  std::vector<std::string> out;
  if (!lib.loaded()) return out;
  for (const char* n : names)
    if (!lib.symbol(n)) out.emplace_back(n);
  return out;
}

}  // namespace cuda
}  // namespace trick

// --- the forwarders ------------------------------------------------------------------------
// X(return type, name, (parameters), (arguments)). The definitions redeclare the headers'
// extern "C" functions, so a parameter list that differs from the header's is a compile
// error ("conflicting declaration of C function"), not a silent mismatch. A function called
// while its library cannot be loaded returns NOT_INITIALIZED; check_cublas and check_cudnn
// then report the loader's error instead (kernels/cuda/handles.cpp).

#define TRICK_CUBLAS_FUNCTIONS(X)                                                                                     \
  X(cublasStatus_t, cublasCreate_v2, (cublasHandle_t * handle), (handle))                                             \
  X(cublasStatus_t, cublasDestroy_v2, (cublasHandle_t handle), (handle))                                              \
  X(cublasStatus_t, cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t streamId), (handle, streamId))           \
  X(cublasStatus_t, cublasSetWorkspace_v2, (cublasHandle_t handle, void* workspace, size_t bytes),                    \
    (handle, workspace, bytes))                                                                                       \
  X(cublasStatus_t, cublasGemmEx,                                                                                     \
    (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,                  \
     const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype, int ldb,       \
     const void* beta, void* C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t algo), \
    (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo))

#ifdef TRICK_WITH_CUDNN
#define TRICK_CUDNN_FUNCTIONS(X)                                                                                       \
  X(cudnnStatus_t, cudnnCreate, (cudnnHandle_t * handle), (handle))                                                    \
  X(cudnnStatus_t, cudnnDestroy, (cudnnHandle_t handle), (handle))                                                     \
  X(cudnnStatus_t, cudnnSetStream, (cudnnHandle_t handle, cudaStream_t streamId), (handle, streamId))                  \
  X(cudnnStatus_t, cudnnCreateTensorDescriptor, (cudnnTensorDescriptor_t * d), (d))                                    \
  X(cudnnStatus_t, cudnnDestroyTensorDescriptor, (cudnnTensorDescriptor_t d), (d))                                     \
  X(cudnnStatus_t, cudnnCreateFilterDescriptor, (cudnnFilterDescriptor_t * d), (d))                                    \
  X(cudnnStatus_t, cudnnDestroyFilterDescriptor, (cudnnFilterDescriptor_t d), (d))                                     \
  X(cudnnStatus_t, cudnnCreateConvolutionDescriptor, (cudnnConvolutionDescriptor_t * d), (d))                          \
  X(cudnnStatus_t, cudnnDestroyConvolutionDescriptor, (cudnnConvolutionDescriptor_t d), (d))                           \
  X(cudnnStatus_t, cudnnSetTensor4dDescriptorEx,                                                                       \
    (cudnnTensorDescriptor_t d, cudnnDataType_t type, int n, int c, int h, int w, int ns, int cs, int hs, int ws),     \
    (d, type, n, c, h, w, ns, cs, hs, ws))                                                                             \
  X(cudnnStatus_t, cudnnSetFilter4dDescriptor,                                                                         \
    (cudnnFilterDescriptor_t d, cudnnDataType_t type, cudnnTensorFormat_t format, int k, int c, int h, int w),         \
    (d, type, format, k, c, h, w))                                                                                     \
  X(cudnnStatus_t, cudnnSetConvolution2dDescriptor,                                                                    \
    (cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v, int dilation_h, int dilation_w,               \
     cudnnConvolutionMode_t mode, cudnnDataType_t computeType),                                                        \
    (d, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, computeType))                                                \
  X(cudnnStatus_t, cudnnSetConvolutionMathType, (cudnnConvolutionDescriptor_t d, cudnnMathType_t mathType),            \
    (d, mathType))                                                                                                     \
  X(cudnnStatus_t, cudnnGetConvolution2dForwardOutputDim,                                                              \
    (const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t inputTensorDesc,                       \
     const cudnnFilterDescriptor_t filterDesc, int* n, int* c, int* h, int* w),                                        \
    (convDesc, inputTensorDesc, filterDesc, n, c, h, w))                                                               \
  X(cudnnStatus_t, cudnnGetConvolutionForwardAlgorithm_v7,                                                             \
    (cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc,            \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc,                              \
     const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults),                \
    (handle, srcDesc, filterDesc, convDesc, destDesc, requestedAlgoCount, returnedAlgoCount, perfResults))             \
  X(cudnnStatus_t, cudnnGetConvolutionBackwardDataAlgorithm_v7,                                                        \
    (cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc, const cudnnTensorDescriptor_t diffDesc,           \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t gradDesc,                              \
     const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults),            \
    (handle, filterDesc, diffDesc, convDesc, gradDesc, requestedAlgoCount, returnedAlgoCount, perfResults))            \
  X(cudnnStatus_t, cudnnGetConvolutionBackwardFilterAlgorithm_v7,                                                      \
    (cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnTensorDescriptor_t diffDesc,              \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,                              \
     const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults),          \
    (handle, srcDesc, diffDesc, convDesc, gradDesc, requestedAlgoCount, returnedAlgoCount, perfResults))               \
  X(cudnnStatus_t, cudnnFindConvolutionForwardAlgorithm,                                                               \
    (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,                   \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc, const int requestedAlgoCount,   \
     int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults),                                              \
    (handle, xDesc, wDesc, convDesc, yDesc, requestedAlgoCount, returnedAlgoCount, perfResults))                       \
  X(cudnnStatus_t, cudnnFindConvolutionBackwardDataAlgorithm,                                                          \
    (cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,                  \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, const int requestedAlgoCount,  \
     int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults),                                          \
    (handle, wDesc, dyDesc, convDesc, dxDesc, requestedAlgoCount, returnedAlgoCount, perfResults))                     \
  X(cudnnStatus_t, cudnnFindConvolutionBackwardFilterAlgorithm,                                                        \
    (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,                  \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, const int requestedAlgoCount,  \
     int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults),                                        \
    (handle, xDesc, dyDesc, convDesc, dwDesc, requestedAlgoCount, returnedAlgoCount, perfResults))                     \
  X(cudnnStatus_t, cudnnGetConvolutionForwardWorkspaceSize,                                                            \
    (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,                   \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc, cudnnConvolutionFwdAlgo_t algo, \
     size_t* sizeInBytes),                                                                                             \
    (handle, xDesc, wDesc, convDesc, yDesc, algo, sizeInBytes))                                                        \
  X(cudnnStatus_t, cudnnGetConvolutionBackwardDataWorkspaceSize,                                                       \
    (cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,                  \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,                                \
     cudnnConvolutionBwdDataAlgo_t algo, size_t* sizeInBytes),                                                         \
    (handle, wDesc, dyDesc, convDesc, dxDesc, algo, sizeInBytes))                                                      \
  X(cudnnStatus_t, cudnnGetConvolutionBackwardFilterWorkspaceSize,                                                     \
    (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,                  \
     const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,                              \
     cudnnConvolutionBwdFilterAlgo_t algo, size_t* sizeInBytes),                                                       \
    (handle, xDesc, dyDesc, convDesc, gradDesc, algo, sizeInBytes))                                                    \
  X(cudnnStatus_t, cudnnConvolutionForward,                                                                            \
    (cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc, const void* x,                      \
     const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,                  \
     cudnnConvolutionFwdAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,                   \
     const cudnnTensorDescriptor_t yDesc, void* y),                                                                    \
    (handle, alpha, xDesc, x, wDesc, w, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, yDesc, y))              \
  X(cudnnStatus_t, cudnnConvolutionBackwardData,                                                                       \
    (cudnnHandle_t handle, const void* alpha, const cudnnFilterDescriptor_t wDesc, const void* w,                      \
     const cudnnTensorDescriptor_t dyDesc, const void* dy, const cudnnConvolutionDescriptor_t convDesc,                \
     cudnnConvolutionBwdDataAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,               \
     const cudnnTensorDescriptor_t dxDesc, void* dx),                                                                  \
    (handle, alpha, wDesc, w, dyDesc, dy, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, dxDesc, dx))          \
  X(cudnnStatus_t, cudnnConvolutionBackwardFilter,                                                                     \
    (cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc, const void* x,                      \
     const cudnnTensorDescriptor_t dyDesc, const void* dy, const cudnnConvolutionDescriptor_t convDesc,                \
     cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,             \
     const cudnnFilterDescriptor_t dwDesc, void* dw),                                                                  \
    (handle, alpha, xDesc, x, dyDesc, dy, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, dwDesc, dw))
#endif  // TRICK_WITH_CUDNN

// Each forwarder looks its target up once (a function-local static: thread-safe).
#define TRICK_FORWARD(library, not_loaded, ret, name, params, args)                                   \
  extern "C" ret name params {                                                                        \
    using Fn = ret(*) params;                                                                         \
    static const Fn fn = reinterpret_cast<Fn>(::trick::cuda::library().symbol(TRICK_LAZY_STR(name))); \
    if (!fn) return not_loaded;                                                                       \
    return fn args;                                                                                   \
  }
#define TRICK_FORWARD_CUBLAS(ret, name, params, args) \
  TRICK_FORWARD(cublas_library, CUBLAS_STATUS_NOT_INITIALIZED, ret, name, params, args)
#define TRICK_FORWARD_CUDNN(ret, name, params, args) \
  TRICK_FORWARD(cudnn_library, CUDNN_STATUS_NOT_INITIALIZED, ret, name, params, args)

TRICK_CUBLAS_FUNCTIONS(TRICK_FORWARD_CUBLAS)
#ifdef TRICK_WITH_CUDNN
TRICK_CUDNN_FUNCTIONS(TRICK_FORWARD_CUDNN)

TRICK_FORWARD(cudnn_library, "(cuDNN not loaded: no message for this status)", const char*, cudnnGetErrorString,
              (cudnnStatus_t status), (status))
#endif

namespace trick {
namespace cuda {

#define TRICK_LAZY_NAME(ret, name, params, args) TRICK_LAZY_STR(name),

const std::vector<const char*>& cublas_functions() {
  static const std::vector<const char*> names{TRICK_CUBLAS_FUNCTIONS(TRICK_LAZY_NAME)};
  return names;
}

const std::vector<const char*>& cudnn_functions() {
#ifdef TRICK_WITH_CUDNN
  static const std::vector<const char*> names{TRICK_CUDNN_FUNCTIONS(TRICK_LAZY_NAME) "cudnnGetErrorString"};
#else
  static const std::vector<const char*> names;
#endif
  return names;
}

}  // namespace cuda
}  // namespace trick
