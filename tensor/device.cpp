// Storage allocation, fills and copies for each device. The CUDA parts are compiled only
// when the build has CUDA (TRICK_WITH_CUDA); a CPU-only build reports CUDA as absent.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tensor/graph_pool.h"
#include "tensor/tensor.h"

#ifdef TRICK_WITH_CUDA
#include <cuda_runtime.h>

#include "tensor/cuda_status.h"
#endif

namespace trick {

namespace {

// Host blocks of at least kHostCacheMin bytes are cached like the CUDA ones below: a step
// of the attack frees and allocates the same activation sizes every time, and a block
// malloc hands back to the OS costs a page fault and a kernel-side zeroing per 4 KiB page
// when it is touched again (Inception v3, forward + step: ~3,400 faults per iteration
// without this cache, ~50 with it). Small blocks go straight to malloc, which is fast for
// them. The cache keeps at most kHostCacheMax bytes of free blocks.
constexpr size_t kHostCacheMin = size_t{64} << 10;
constexpr size_t kHostCacheMax = size_t{1} << 30;

class HostCache {
 public:
  void* alloc(size_t bytes) {
    if (bytes < kHostCacheMin) return raw(round(bytes, 64), bytes);
    const size_t size = round(bytes, 4096);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 8) {
        void* p = it->second;
        cached_ -= it->first;
        sizes_[p] = it->first;
        free_.erase(it);
        return p;
      }
    }
    void* p = std::aligned_alloc(64, size);
    if (!p) {  // give the cache back and try once more
      release();
      p = raw(size, bytes);
    }
    std::lock_guard<std::mutex> lock(mu_);
    sizes_[p] = size;
    return p;
  }
  void free(void* p, size_t bytes) {
    if (bytes < kHostCacheMin) {
      std::free(p);
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end() || cached_ + it->second > kHostCacheMax) {
      if (it != sizes_.end()) sizes_.erase(it);
      std::free(p);
      return;
    }
    free_.emplace(it->second, p);
    cached_ += it->second;
    sizes_.erase(it);
  }

 private:
  static size_t round(size_t b, size_t to) { return (b + to - 1) / to * to; }
  // 64-byte alignment: whole cache lines, and vector loads never split.
  static void* raw(size_t size, size_t bytes) {
    void* p = std::aligned_alloc(64, size);
    TRICK_CHECK(p, "out of memory: cannot allocate ", byte_size(bytes), " on the host");
    return p;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : free_) std::free(kv.second);
    free_.clear();
    cached_ = 0;
  }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> sizes_;
  size_t cached_ = 0;
};

HostCache& host_cache() {
  static HostCache* cache = new HostCache();  // never destroyed: outlives static tensors
  return *cache;
}

void* host_alloc(size_t bytes) { return bytes == 0 ? nullptr : host_cache().alloc(bytes); }

#ifdef TRICK_WITH_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("cuda: ", what, ": ", cuda_status_text(e));
}

// cudaMalloc and cudaHostAlloc are "potentially unsafe" during a global-mode stream
// capture (they are not stream-ordered, so the capture does not see them); allocating
// fresh memory for the graph is exactly what we want, so the capturing thread relaxes
// the check for the call (as PyTorch's allocator does).
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCaptureMode() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

// A caching allocator: freed blocks go to a free list keyed by size, so the attack loop,
// which frees and allocates the same sizes every step, never calls cudaMalloc after the
// first step. While a CUDA graph is captured, allocations are routed into the graph's
// private pool (tensor/graph_pool.h says why and how).
class CudaCache {
 public:
  void* alloc(size_t bytes, int device) {
    const size_t size = round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    const bool captured = routing(device);
    size_t got = 0;
    if (captured) {
      Pool& pool = pools_.at(cap_.pool);
      if (void* p = take(pool.free, size, &got)) return hand_out(p, got, device, cap_.pool);
      // A free block of the shared cache becomes the graph's: any eager work that used it
      // is on the legacy stream, which the graph's blocking stream waits for at replay.
      if (void* p = take(free_[device], size, &got)) {
        ++pool.blocks;
        return hand_out(p, got, device, cap_.pool);
      }
    } else if (void* p = take(free_[device], size, &got)) {
      return hand_out(p, got, device, 0);
    }
    int prev = 0;
    cudaGetDevice(&prev);
    if (prev != device) cudaSetDevice(device);
    void* p = nullptr;
    cudaError_t e = malloc_device(&p, size, captured);
    if (e == cudaErrorMemoryAllocation && !captured) {  // give the cache back and try once more
      cudaGetLastError();
      release_locked(device);
      e = malloc_device(&p, size, false);
    }
    if (prev != device) cudaSetDevice(prev);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      fail("out of memory: cannot allocate ", byte_size(bytes), " on cuda:", device,
           captured ? " (while capturing a CUDA graph)" : "");
    }
    cuda_check(e, "cudaMalloc");
    ++mallocs_;
    if (captured) ++pools_.at(cap_.pool).blocks;
    return hand_out(p, size, device, captured ? cap_.pool : 0);
  }

  void free(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = in_use_.find(p);
    if (it == in_use_.end()) return;
    const Block b = it->second;
    in_use_.erase(it);
    if (b.pool) {
      auto pit = pools_.find(b.pool);
      if (pit != pools_.end()) {  // stays the graph's until the graph is destroyed
        pit->second.free.emplace(b.size, p);
        return;
      }
    }
    if (cap_.active && cap_.device == b.device) {
      // Freed during a capture: captured work may still read it at replay, so it joins the
      // capturing graph's pool instead of the shared cache (the "deferred" free).
      Pool& pool = pools_.at(cap_.pool);
      pool.free.emplace(b.size, p);
      ++pool.blocks;
      return;
    }
    free_[b.device].emplace(b.size, p);
  }

  void release(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    release_locked(device);
  }

  uint64_t begin_capture(int device, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    TRICK_CHECK(!cap_.active, "cuda graph: a capture is already in progress (on cuda:", cap_.device,
                "); captures cannot nest");
    const uint64_t id = next_pool_++;
    pools_[id].device = device;
    cap_ = Capture{true, std::this_thread::get_id(), device, id, stream};
    return id;
  }

  void end_capture() {
    std::lock_guard<std::mutex> lock(mu_);
    cap_ = Capture{};
  }

  void release_pool(uint64_t id) {
    std::vector<void*> pinned;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto pit = pools_.find(id);
      if (pit == pools_.end()) return;
      TRICK_CHECK(!(cap_.active && cap_.pool == id), "cuda graph: cannot release the pool of the capture in progress");
      Pool& pool = pit->second;
      for (const auto& kv : pool.free) free_[pool.device].emplace(kv.first, kv.second);
      for (auto& kv : in_use_)
        if (kv.second.pool == id) kv.second.pool = 0;  // back to the shared cache when freed
      pinned = std::move(pool.pinned);
      pools_.erase(pit);
    }
    for (void* h : pinned) cudaFreeHost(h);  // the graph is destroyed: nothing reads them any more
  }

  bool capturing_here() {
    std::lock_guard<std::mutex> lock(mu_);
    return cap_.active && cap_.thread == std::this_thread::get_id();
  }

  // The capture stream when this thread is capturing on `device`.
  bool capture_stream(int device, cudaStream_t* s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!routing(device)) return false;
    *s = cap_.stream;
    return true;
  }

  // Pinned host memory that lives as long as the capturing pool (staging for captured
  // host-to-device copies).
  void* staging(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    TRICK_CHECK(cap_.active, "cuda graph: staging memory outside a capture");
    void* h = nullptr;
    cudaError_t e;
    {
      RelaxedCaptureMode relaxed;
      e = cudaHostAlloc(&h, bytes ? bytes : 1, cudaHostAllocDefault);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail("out of memory: cannot allocate ", byte_size(bytes),
           " of pinned host memory (staging a copy captured into a CUDA graph): ", cudaGetErrorString(e));
    }
    pools_.at(cap_.pool).pinned.push_back(h);
    return h;
  }

  CudaAllocStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    CudaAllocStats s;
    s.mallocs = mallocs_;
    s.live_pools = static_cast<int64_t>(pools_.size());
    for (const auto& kv : pools_) s.pool_blocks += kv.second.blocks;
    for (const auto& kv : free_) s.cached_blocks += static_cast<int64_t>(kv.second.size());
    return s;
  }

 private:
  struct Block {
    size_t size = 0;
    int device = 0;
    uint64_t pool = 0;  // 0: the shared cache
  };
  struct Pool {
    int device = 0;
    std::multimap<size_t, void*> free;
    int64_t blocks = 0;         // blocks tagged with this pool, free or in use
    std::vector<void*> pinned;  // staging buffers of captured host-to-device copies
  };
  struct Capture {
    bool active = false;
    std::thread::id thread;
    int device = -1;
    uint64_t pool = 0;
    cudaStream_t stream = nullptr;
  };

  static size_t round(size_t b) { return b < 512 ? 512 : (b + 511) / 512 * 512; }

  // A free block of at least `size` bytes and at most 1/8 more, removed from `list`.
  static void* take(std::multimap<size_t, void*>& list, size_t size, size_t* got) {
    auto it = list.lower_bound(size);
    if (it == list.end() || it->first > size + size / 8) return nullptr;
    void* p = it->second;
    *got = it->first;
    list.erase(it);
    return p;
  }

  void* hand_out(void* p, size_t size, int device, uint64_t pool) {
    in_use_[p] = Block{size, device, pool};
    return p;
  }

  // Whether this thread's allocations on `device` go to the capture pool.
  bool routing(int device) const {
    return cap_.active && cap_.device == device && cap_.thread == std::this_thread::get_id();
  }

  static cudaError_t malloc_device(void** p, size_t size, bool captured) {
    if (!captured) return cudaMalloc(p, size);
    RelaxedCaptureMode relaxed;
    return cudaMalloc(p, size);
  }

  void release_locked(int device) {
    for (auto& kv : free_[device]) cudaFree(kv.second);
    free_[device].clear();
  }

  std::mutex mu_;
  std::map<int, std::multimap<size_t, void*>> free_;  // the shared cache, per device
  std::unordered_map<void*, Block> in_use_;
  std::map<uint64_t, Pool> pools_;
  Capture cap_;
  uint64_t next_pool_ = 1;
  int64_t mallocs_ = 0;
};

CudaCache& cuda_cache() {
  static CudaCache* cache = new CudaCache();  // never destroyed: outlives static tensors
  return *cache;
}
#endif

}  // namespace

namespace {
bool g_poison_host = false;
}  // namespace

void set_poison_new_host_memory(bool on) { g_poison_host = on; }

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
    data_ = host_alloc(bytes);
    if (g_poison_host && data_) std::memset(data_, 0xFF, bytes);  // 0xFFFFFFFF is a NaN
    return;
  }
#ifdef TRICK_WITH_CUDA
  TRICK_CHECK(device.index >= 0 && device.index < cuda_device_count(), "device ", device.str(),
              " is not present (", cuda_device_count(), " CUDA devices)");
  if (bytes) data_ = cuda_cache().alloc(bytes, device.index);
#else
  fail("device ", device.str(), ": this build of trick has no CUDA support");
#endif
}

Storage::~Storage() {
  if (!data_) return;
  if (device_.is_cpu()) {
    host_cache().free(data_, bytes_);
    return;
  }
#ifdef TRICK_WITH_CUDA
  cuda_cache().free(data_);
#endif
}

void device_memcpy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memmove(dst, src, bytes);
    return;
  }
#ifdef TRICK_WITH_CUDA
  cudaStream_t s = nullptr;
  if (cuda_cache().capture_stream(dst_dev.is_cuda() ? dst_dev.index : src_dev.index, &s)) {
    TRICK_CHECK(dst_dev.is_cuda(), "copy from ", src_dev.str(),
                " to the host while a CUDA graph is being captured: captured work has not run yet, so "
                "nothing can be read back inside the captured region");
    if (src_dev.is_cpu()) {
      void* pinned = cuda_cache().staging(bytes);
      std::memcpy(pinned, src, bytes);
      cuda_check(cudaMemcpyAsync(dst, pinned, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (captured)");
    } else {
      cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (captured)");
    }
    return;
  }
  cudaMemcpyKind kind = dst_dev.is_cpu()   ? cudaMemcpyDeviceToHost
                        : src_dev.is_cpu() ? cudaMemcpyHostToDevice
                                           : cudaMemcpyDeviceToDevice;
  cuda_check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
#else
  fail("copy between ", src_dev.str(), " and ", dst_dev.str(), ": this build of trick has no CUDA support");
#endif
}

void Tensor::fill(float value) {
  if (numel() == 0) return;
  if (device_.is_cpu()) {
    const int64_t r = rows(), c = cols();
    if (is_contiguous()) {
      std::fill(data_, data_ + numel(), value);
    } else {
      TRICK_CHECK(is_row_strided(), "fill: tensor of shape ", shape_.str(), " is not row-strided");
      for (int64_t i = 0; i < r; ++i) std::fill(data_ + i * ld(), data_ + i * ld() + c, value);
    }
    return;
  }
#ifdef TRICK_WITH_CUDA
  // Zero fills (+0.0f: all bits zero) are memsets: on the capture stream during a capture
  // (a memset node), else on the legacy stream every eager op and copy is ordered on.
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  if (bits == 0) {
    TRICK_CHECK(is_row_strided(), "fill: tensor of shape ", shape_.str(), " is not row-strided");
    cudaStream_t s = nullptr;
    const bool captured = cuda_cache().capture_stream(device_.index, &s);
    int prev = 0;
    cudaGetDevice(&prev);
    if (prev != device_.index) cudaSetDevice(device_.index);
    const cudaError_t e =
        // One row is one run of memory whatever its stride (which cudaMemset2D would refuse
        // as a pitch when it is below the row's width).
        is_contiguous() || rows() == 1 ? cudaMemsetAsync(data_, 0, numel() * sizeof(float), s)
                        : cudaMemset2DAsync(data_, ld() * sizeof(float), 0, cols() * sizeof(float), rows(), s);
    if (prev != device_.index) cudaSetDevice(prev);
    cuda_check(e, captured ? "cudaMemsetAsync (captured)" : "cudaMemsetAsync");
    return;
  }
#endif
  // Other values on a device: build them on the host and copy (rare and off the hot path;
  // during a capture the copy is staged and captured, see device_memcpy).
  Tensor host = Tensor::full(shape_, value);
  copy_from(host);
}

int cuda_device_count() {
#ifdef TRICK_WITH_CUDA
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
#else
  return 0;
#endif
}

#ifdef TRICK_WITH_CUDA
namespace cuda {
std::string library_kernel_problem(int device);  // kernels/cuda/runtime.cu
}
#endif

std::string cuda_device_problem(int index) {
#ifdef TRICK_WITH_CUDA
  const int count = cuda_device_count();
  if (count == 0) return "no usable CUDA device (no GPU or no driver)";
  if (index < 0 || index >= count)
    return count == 1 ? std::string("this machine has 1 CUDA device (cuda:0)")
                      : cat("this machine has ", count, " CUDA devices (cuda:0 to cuda:", count - 1, ")");
  static std::mutex mu;
  static std::map<int, std::string> problems;
  std::lock_guard<std::mutex> lock(mu);
  auto it = problems.find(index);
  if (it == problems.end()) it = problems.emplace(index, cuda::library_kernel_problem(index)).first;
  return it->second;
#else
  (void)index;
  return "this build of trick has no CUDA support";
#endif
}

bool cuda_available() { return cuda_device_count() > 0 && cuda_device_problem(0).empty(); }

#ifdef TRICK_WITH_CUDA
uint64_t begin_capture_pool(int device, void* stream) {
  return cuda_cache().begin_capture(device, static_cast<cudaStream_t>(stream));
}
void end_capture_pool() { cuda_cache().end_capture(); }
void release_capture_pool(uint64_t id) { cuda_cache().release_pool(id); }
void release_cached_blocks(int device) { cuda_cache().release(device); }
bool capturing_allocations() { return cuda_cache().capturing_here(); }
CudaAllocStats cuda_alloc_stats() { return cuda_cache().stats(); }
#else
uint64_t begin_capture_pool(int, void*) { fail("cuda graph: this build of trick has no CUDA support"); }
void end_capture_pool() {}
void release_capture_pool(uint64_t) {}
void release_cached_blocks(int) {}
bool capturing_allocations() { return false; }
CudaAllocStats cuda_alloc_stats() { return CudaAllocStats{}; }
#endif

}  // namespace trick
