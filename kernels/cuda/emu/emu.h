// The CUDA emulator's device side: what kernels/cuda/*.cu need, compiled by the host C++
// compiler, to run their kernels on the CPU (kernels/cuda/emu/README.md). CMake prepends

// copies build the trick_emu_tests binary only, never trick.
//
// Every CUDA thread of a block runs as a fiber on the launching thread, so a __shared__
// array (a function-local `static thread_local` here) is the block's, and __syncthreads,
// __syncwarp, __shfl_down_sync and mma.sync are the points where fibers wait for each other.
#pragma once
#define TRICK_CUDA_EMU 1

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// The CUDA keywords, as the host compiler should read them here.
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __forceinline__
#undef __launch_bounds__
#undef __noinline__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static

namespace trick {
namespace emu {

// A launch's configuration, as between <<< and >>>.
struct Config {
  dim3 grid, block;
  size_t shared;
  cudaStream_t stream;
  Config(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), shared(s), stream(st) {}
};

// Runs body once per thread of every block of c (or records it into the graph that c's
// stream is capturing); name is for the messages of a failed launch.
void launch(const Config& c, const char* name, std::function<void()> body);

// `k<<<cfg>>>(args)` reads `::trick::emu::Launch(Config(cfg), "k", [=](auto&... a) { k(a...); })(args)`
// here: the arguments are evaluated once, at the launch, and each thread calls the kernel
// with its own copies of them (converted to the kernel's parameter types), as CUDA passes
// them; the generic lambda lets a kernel template deduce its arguments as at a real launch.
template <class F>
struct Launch {
  Config config;
  const char* name;
  F kernel;
  Launch(const Config& c, const char* n, F f) : config(c), name(n), kernel(f) {}
  template <class... A>
  void operator()(A&&... a) const {
    auto values = std::tuple<std::decay_t<A>...>(std::forward<A>(a)...);
    launch(config, name, [k = kernel, values]() {
      auto copy = values;
      std::apply(k, copy);
    });
  }
};

// The running thread's coordinates.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
// The launch's dynamic shared memory (extern __shared__).
void* dynamic_shared();

void syncthreads();
void syncwarp();
// __shfl_down_sync's exchange, on the value's bits (up to 8 bytes).
uint64_t shfl_down_bits(unsigned mask, uint64_t bits, unsigned delta, int width);
template <class T>
T shfl_down(unsigned mask, T v, unsigned delta, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shfl of a value of up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  bits = shfl_down_bits(mask, bits, delta, width);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
[[noreturn]] void trap();

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (k = 8) and
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (k = 16) for the calling lane, with the
// fragment layouts of the PTX ISA (warp-level matrix fragments for mma.m16n8k8 and
// mma.m16n8k16), written here from the ISA, not from kernels/cuda/igemm.h.
void mma_tf32_m16n8k8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
void mma_bf16_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
// mf x nf of them at once (up to 4 x 4), for igemm_tc_kernel's inner step: d[i][j] += A_i B_j
// with d (mf x nf x 4), a (mf x 4) and b (nf x 2) row-major: one exchange among the warp's
// lanes instead of mf * nf, the same products (kernels/cuda/emu/README.md).
void mma_many(bool bf16, float* d, const uint32_t* a, const uint32_t* b, int mf, int nf);

// The emulated device's facts (what cudaGetDeviceProperties reports).
constexpr int kMultiProcessors = 132;  // an H200's, so split-K and tile choices match it
constexpr int kMajor = 9, kMinor = 0;

}  // namespace emu
}  // namespace trick

// CUDA's device min and max, for any two arithmetic types (the usual conversions).
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

#define threadIdx (::trick::emu::thread_idx())
#define blockIdx (::trick::emu::block_idx())
#define blockDim (::trick::emu::block_dim())
#define gridDim (::trick::emu::grid_dim())
#define __syncthreads() ::trick::emu::syncthreads()
#define __syncwarp(...) ::trick::emu::syncwarp()
#define __shfl_down_sync(...) ::trick::emu::shfl_down(__VA_ARGS__)
#define __trap() ::trick::emu::trap()
