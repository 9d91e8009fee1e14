// Storage allocation, fills and copies for each device. The CUDA parts are compiled only
// when the build has CUDA (TRICK_WITH_CUDA); a CPU-only build reports CUDA as absent.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "tensor/tensor.h"

#ifdef TRICK_WITH_CUDA
#include <cuda_runtime.h>
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
    TRICK_CHECK(p, "out of memory: cannot allocate ", bytes / (1024.0 * 1024.0), " MiB on the host");
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
  if (e != cudaSuccess) fail("cuda: ", what, ": ", cudaGetErrorString(e));
}

// A caching allocator: freed blocks go to a free list keyed by size, so the attack loop,
// which frees and allocates the same sizes every step, never calls cudaMalloc after the
// first step.
class CudaCache {
 public:
  void* alloc(size_t bytes, int device) {
    const size_t size = round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto& pool = free_[device];
    auto it = pool.lower_bound(size);
    if (it != pool.end() && it->first <= size + size / 8) {
      void* p = it->second;
      pool.erase(it);
      sizes_[p] = it->first;
      return p;
    }
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {  // give the cache back and try once more
      cudaGetLastError();
      release_locked(device);
      e = cudaMalloc(&p, size);
    }
    cudaSetDevice(prev);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      fail("out of memory: cannot allocate ", bytes / (1024.0 * 1024.0), " MiB on cuda:", device);
    }
    cuda_check(e, "cudaMalloc");
    sizes_[p] = size;
    return p;
  }
  void free(void* p, int device) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    free_[device].emplace(it->second, p);
    sizes_.erase(it);
  }

 private:
  static size_t round(size_t b) { return b < 512 ? 512 : (b + 511) / 512 * 512; }
  void release_locked(int device) {
    for (auto& kv : free_[device]) cudaFree(kv.second);
    free_[device].clear();
  }
  std::mutex mu_;
  std::map<int, std::multimap<size_t, void*>> free_;
  std::map<void*, size_t> sizes_;
};

CudaCache& cuda_cache() {
  static CudaCache* cache = new CudaCache();  // never destroyed: outlives static tensors
  return *cache;
}
#endif

}  // namespace

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
    data_ = host_alloc(bytes);
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
  cuda_cache().free(data_, device_.index);
#endif
}

void device_memcpy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memmove(dst, src, bytes);
    return;
  }
#ifdef TRICK_WITH_CUDA
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
  // Device tensors: build the row on the host and copy it (fills are rare and off the hot path).
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

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace trick
