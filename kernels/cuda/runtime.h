// CUDA runtime glue shared by the CUDA kernels: status checks with file and line, the
// stream every kernel of the library runs on, device properties, grow-only workspaces
// and the small checks launchers make before indexing with 32-bit ints.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "tensor/error.h"
#include "tensor/tensor.h"

namespace trick {
namespace cuda {

void check_status(cudaError_t e, const char* what, const char* file, int line);
void check_launch(const char* kernel, const char* file, int line);

// The stream all library kernels, copies and library calls (cuBLAS, cuDNN) are issued on.
// Default: the legacy default stream (0), which orders everything against cudaMemcpy and
// the caching allocator in tensor/device.cpp. A graph-capturing caller sets its own.
cudaStream_t stream();
void set_stream(cudaStream_t s);
// True while `stream()` is being captured into a CUDA graph: launchers then skip the
// host-side checks that need a device-to-host copy.
bool stream_capturing();

// Makes `device` current for the scope and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

int current_device();
int sm_count();            // multiprocessors of the current device (cached)
int compute_capability();  // of the current device, as 10 * major + minor: 90 on an H100/H200 (cached)

// The CUDA architectures this build's kernels were compiled for, as CMake was given them
// (CMAKE_CUDA_ARCHITECTURES, commas between: "90", "86,90", "80-real"...).
const char* built_architectures();
// True in the CUDA emulator's build (trick_emu, trick_emu_tests: kernels/cuda/emu/), where
// this library's kernels run on the CPU and cuBLAS and cuDNN, which need a real GPU, do not.
bool emulated();
// Why `device` cannot run `kernel`, compiled for `architectures` ("" when it can): asks the
// runtime for the kernel's attributes there, which fails when the binary holds no code the GPU
// can run (no SASS of its architecture and no PTX it can compile). The reason names the GPU,
// its compute capability, the architectures and how to rebuild. Leaves no error pending.
std::string kernel_problem(int device, const void* kernel, const char* architectures);
// kernel_problem for a kernel of this library: every kernels/cuda/ source is compiled for
// the same architectures, so one kernel answers for all.
std::string library_kernel_problem(int device);

// Device memory owned by a move-only handle; freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void release();
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Scratch memory per purpose and device. A workspace only grows (to the largest request
// seen), so steady-state steps never call cudaMalloc. The pointer is valid for the op that
// asked (a slot is used by one op at a time, stream-ordered), and for any graph that
// captured it (see workspace_hold).
enum class Workspace { Im2col, SplitK, Cudnn, Reduce, Staging, kCount };
void* workspace(Workspace slot, size_t bytes);
template <typename T>
T* workspace_as(Workspace slot, size_t count) {
  return static_cast<T*>(workspace(slot, count * sizeof(T)));
}
// A captured CUDA graph records workspace addresses, so they must outlive it even if an
// eager op outside the graph later grows the slot. While any graph holds the workspaces
// (counted: cuda::Graph calls hold when it captures and release when it is destroyed), an
// outgrown buffer is retired instead of freed; the last release frees the retired ones.
void workspace_hold();
void workspace_release() noexcept;

// Throws naming the op unless 0 <= v <= limit (default: what an int index can hold).
void check_fits_int(const char* op, const char* what, int64_t v, int64_t limit = INT32_MAX);
// Blocks of `threads` covering n items, capped (kernels then loop with a grid stride).
unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 16);

}  // namespace cuda
}  // namespace trick

#define TRICK_CUDA_CHECK(call) ::trick::cuda::check_status((call), #call, __FILE__, __LINE__)
#define TRICK_CUDA_LAUNCHED(kernel) ::trick::cuda::check_launch(#kernel, __FILE__, __LINE__)
