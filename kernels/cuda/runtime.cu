// CUDA runtime glue shared by the CUDA kernels: status checks with file and line, the
// library stream, device properties and workspaces.
#include "kernels/cuda/runtime.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tensor/cuda_status.h"
#include "tensor/graph_pool.h"

namespace trick {
namespace cuda {

void check_status(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) fail("cuda: ", what, " failed at ", file, ":", line, ": ", cuda_status_text(e));
}

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail("cuda: launch of ", kernel, " failed at ", file, ":", line, ": ", cuda_status_text(e));
}

namespace {
cudaStream_t& stream_setting() {
  static cudaStream_t s = nullptr;
  return s;
}
}  // namespace

cudaStream_t stream() { return stream_setting(); }
void set_stream(cudaStream_t s) { stream_setting() = s; }

bool stream_capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  // The legacy default stream cannot be captured, and querying it while another stream
  // captures in relaxed mode is itself an error, so only a real stream is asked.
  if (stream() == nullptr) return false;
  TRICK_CUDA_CHECK(cudaStreamIsCapturing(stream(), &status));
  return status != cudaStreamCaptureStatusNone;
}

DeviceGuard::DeviceGuard(Device device) {
  TRICK_CHECK(device.is_cuda(), "cuda: a CUDA op got a tensor on ", device.str());
  int cur = 0;
  TRICK_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != device.index) {
    TRICK_CUDA_CHECK(cudaSetDevice(device.index));
    previous_ = cur;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);  // no throw from a destructor
}

int current_device() {
  int d = 0;
  TRICK_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

namespace {
// A device attribute of the current device, read once per device and attribute.
int cached_attribute(cudaDeviceAttr attr) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, int> values;
  const int d = current_device();
  std::lock_guard<std::mutex> lock(mu);
  const std::pair<int, int> key{d, static_cast<int>(attr)};
  auto it = values.find(key);
  if (it != values.end()) return it->second;
  int v = 0;
  TRICK_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, d));
  values[key] = v;
  return v;
}
}  // namespace

int sm_count() { return std::max(cached_attribute(cudaDevAttrMultiProcessorCount), 1); }

int compute_capability() {
  return 10 * cached_attribute(cudaDevAttrComputeCapabilityMajor) + cached_attribute(cudaDevAttrComputeCapabilityMinor);
}

#ifndef TRICK_CUDA_ARCHITECTURES
#define TRICK_CUDA_ARCHITECTURES "(unknown)"
#endif
const char* built_architectures() { return TRICK_CUDA_ARCHITECTURES; }
bool emulated() {
#if defined(TRICK_CUDA_EMU)
  return true;
#else
  return false;
#endif
}

std::string kernel_problem(int device, const void* kernel, const char* architectures) {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  cudaError_t e = cudaSetDevice(device);
  cudaFuncAttributes attr{};
  if (e == cudaSuccess) e = cudaFuncGetAttributes(&attr, kernel);
  cudaGetLastError();  // none of these errors is sticky: clear it for the next call
  if (previous >= 0 && previous != device) cudaSetDevice(previous);
  if (e == cudaSuccess) return "";
  cudaDeviceProp prop{};
  const bool named = cudaGetDeviceProperties(&prop, device) == cudaSuccess;
  cudaGetLastError();
  const std::string gpu =
      named ? cat("cuda:", device, " (", prop.name, ", compute capability ", prop.major, ".", prop.minor, ")")
            : cat("cuda:", device);
  const std::string what = cat("this build's CUDA kernels, compiled for architectures ", architectures,
                               ", cannot run on ", gpu, ": ", cudaGetErrorString(e));
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction)
    return cat(
        what, "; rebuild trick on that machine (CMake builds for the GPUs nvidia-smi lists) or with ",
        "-DCMAKE_CUDA_ARCHITECTURES=", named ? cat(prop.major, prop.minor) : std::string("<its compute capability>"),
        ", or run with --device cpu");
  if (e == cudaErrorUnsupportedPtxVersion)
    return cat(what,
               " (PTX newer than the driver): update the NVIDIA driver, or rebuild trick for the GPU's architecture");
  return what;
}

namespace {
__global__ void library_probe_kernel() {}
}  // namespace

std::string library_kernel_problem(int device) {
  return kernel_problem(device, reinterpret_cast<const void*>(&library_probe_kernel), built_architectures());
}

DeviceBuffer::DeviceBuffer(size_t bytes) {
  if (bytes == 0) return;
  cudaError_t e = cudaMalloc(&data_, bytes);
  if (e == cudaErrorMemoryAllocation) {  // the tensors' cache may hold the memory: give it back, try once more
    cudaGetLastError();
    release_cached_blocks(current_device());
    e = cudaMalloc(&data_, bytes);
  }
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    data_ = nullptr;
    fail("out of memory: cannot allocate a workspace of ", byte_size(bytes), " on cuda:", current_device());
  }
  TRICK_CUDA_CHECK(e);
  bytes_ = bytes;
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::release() {
  // cudaFree waits for the device, so work still reading the old buffer finishes first.
  if (data_) cudaFree(data_);
  data_ = nullptr;
  bytes_ = 0;
}

namespace {
struct Workspaces {
  std::mutex mu;
  std::map<std::pair<int, int>, DeviceBuffer> buffers;  // (device, slot)
  std::vector<DeviceBuffer> retired;                   // outgrown while a graph held them
  int holds = 0;
};
Workspaces& workspaces() {
  static Workspaces* w = new Workspaces();  // never destroyed: no cudaFree after the driver unloads
  return *w;
}
}  // namespace

void* workspace(Workspace slot, size_t bytes) {
  Workspaces& ws = workspaces();
  const int d = current_device();
  std::lock_guard<std::mutex> lock(ws.mu);
  DeviceBuffer& b = ws.buffers[{d, static_cast<int>(slot)}];
  if (b.bytes() < bytes) {
    // Inside a graph capture the old buffer may already be recorded in the graph, and
    // cudaFree cannot be captured: fail cleanly (the caller runs the step eagerly once).
    TRICK_CHECK(!stream_capturing(), "cuda: workspace ", static_cast<int>(slot), " would grow from ", b.bytes(),
                " to ", bytes, " bytes while a CUDA graph is captured; run the work eagerly once first");
    if (ws.holds > 0) {
      ws.retired.push_back(std::move(b));  // a live graph may still replay on it
    } else {
      b = DeviceBuffer();  // free first, so the old and new buffer never coexist
    }
    // Grow by at least 1/8 so a slowly growing sequence of requests does not reallocate
    // every time; round to 2 MiB.
    size_t want = std::max(bytes, bytes + bytes / 8);
    want = (want + (size_t{2} << 20) - 1) / (size_t{2} << 20) * (size_t{2} << 20);
    b = DeviceBuffer(want);
  }
  return b.data();
}

void workspace_hold() {
  Workspaces& ws = workspaces();
  std::lock_guard<std::mutex> lock(ws.mu);
  ++ws.holds;
}

void workspace_release() noexcept {
  Workspaces& ws = workspaces();
  std::vector<DeviceBuffer> free_now;
  {
    std::lock_guard<std::mutex> lock(ws.mu);
    if (ws.holds > 0 && --ws.holds == 0) free_now.swap(ws.retired);
  }
  // free_now's buffers are cudaFree'd here, outside the lock.
}

void check_fits_int(const char* op, const char* what, int64_t v, int64_t limit) {
  TRICK_CHECK(v >= 0 && v <= limit, op, ": ", what, " = ", v, " is too large for the CUDA kernel (limit ", limit, ")");
}

unsigned grid_for(int64_t n, int threads, int64_t cap) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap)));
}

}  // namespace cuda
}  // namespace trick
