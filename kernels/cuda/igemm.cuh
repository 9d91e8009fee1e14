// The tiled (implicit-)GEMM kernel shared by cuda::gemm and the convolutions. A block
// computes a BM x BN tile of C for one blockIdx.z (a stride phase or a split-K range);
// each of its threads keeps 8 x 8 (narrow tiles: 8 x 4) accumulators in registers. The
// reduction runs in kBK-deep stages through double-buffered shared memory: while the
// block multiplies stage t, each thread already holds stage t+1's elements in registers
// (loaded from global memory by the problem's loaders), and stores them to the other
// buffer after.
// The problems and their index math live in kernels/cuda/igemm.h; tests/test_igemm_replay.cpp
// replays this exact schedule on the host (keep the two in step).
#pragma once
#include "kernels/backend.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/igemm.h"
#include "kernels/cuda/runtime.h"

namespace trick {
namespace cuda {
namespace igemm {

template <class P>
__global__ void __launch_bounds__(P::T::NT) igemm_kernel(const P p) {
  using T = typename P::T;
  using AMap = typename P::AMap;
  using BMap = typename P::BMap;
  constexpr int BM = T::BM, BN = T::BN, TX = T::TX, TN = T::TN;
  __shared__ __align__(16) float as[2][kBK][BM + kPad];
  __shared__ __align__(16) float bs[2][kBK][BN + kPad];

  const int z = blockIdx.z;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int m_size = p.m_size(z);
  if (m0 >= m_size) return;  // a stride phase smaller than the grid: the whole block leaves
  int k0, k1;
  p.k_range(z, k0, k1);
  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;

  typename P::ALoader la;
  typename P::BLoader lb;
  p.init_a(la, z, m0, k0, k1, tid);
  p.init_b(lb, z, n0, k0, k1, tid);
  float ra[AMap::S], rb[BMap::S];
  float acc[8][TN];
  TRICK_UNROLL
  for (int i = 0; i < 8; ++i) {
    TRICK_UNROLL
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
  }

  const int stages = k1 > k0 ? (k1 - k0 + kBK - 1) / kBK : 0;
  if (stages > 0) {
    p.load_a(la, ra);
    p.load_b(lb, rb);
    TRICK_UNROLL
    for (int j = 0; j < AMap::S; ++j) as[0][AMap::kk(tid, j)][AMap::row(tid, j)] = ra[j];
    TRICK_UNROLL
    for (int j = 0; j < BMap::S; ++j) bs[0][BMap::kk(tid, j)][BMap::row(tid, j)] = rb[j];
    __syncthreads();
    for (int t = 0; t < stages; ++t) {
      const int cur = t & 1;
      const bool more = t + 1 < stages;
      if (more) {  // global loads of the next stage, in flight during the math below
        p.next_a(la);
        p.next_b(lb);
        p.load_a(la, ra);
        p.load_b(lb, rb);
      }
      TRICK_UNROLL
      for (int kk = 0; kk < kBK; ++kk) {
        // Rows Tile::row(ty, 0..7) and columns Tile::col(tx, 0..TN-1), as float4s.
        const float4 a0 = *reinterpret_cast<const float4*>(&as[cur][kk][ty * 4]);
        const float4 a1 = *reinterpret_cast<const float4*>(&as[cur][kk][BM / 2 + ty * 4]);
        const float4 b0 = *reinterpret_cast<const float4*>(&bs[cur][kk][tx * 4]);
        float4 b1 = b0;
        if constexpr (TN == 8) b1 = *reinterpret_cast<const float4*>(&bs[cur][kk][BN / 2 + tx * 4]);
        const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
        TRICK_UNROLL
        for (int i = 0; i < 8; ++i) {
          TRICK_UNROLL
          for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
      }
      if (more) {
        // The other buffer was last read in stage t-1, before the barrier that ended it.
        TRICK_UNROLL
        for (int j = 0; j < AMap::S; ++j) as[cur ^ 1][AMap::kk(tid, j)][AMap::row(tid, j)] = ra[j];
        TRICK_UNROLL
        for (int j = 0; j < BMap::S; ++j) bs[cur ^ 1][BMap::kk(tid, j)][BMap::row(tid, j)] = rb[j];
      }
      __syncthreads();
    }
  }

  const int n_size = p.n_size();
  TRICK_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + T::row(ty, i);
    if (m >= m_size) continue;
    float* row = p.row_ptr(z, m);
    TRICK_UNROLL
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + T::col(tx, j);
      if (n < n_size) row[n] = p.ep.apply(acc[i][j], n, row + n);
    }
  }
}

// One tensor-core product of a warp, d += a * b, with MmaTf32's (m16n8k8, TF32) or
// MmaBf16's (m16n8k16, bf16) fragments.
__device__ __forceinline__ void mma(MmaTf32, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(TRICK_CUDA_EMU)  // the CUDA emulator (kernels/cuda/emu/emu.h)
  ::trick::emu::mma_tf32_m16n8k8(d, a, b);
#elif __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // launch() refuses tensor cores below compute capability 8.0
#endif
}
__device__ __forceinline__ void mma(MmaBf16, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(TRICK_CUDA_EMU)
  ::trick::emu::mma_bf16_m16n8k16(d, a, b);
#elif __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

// igemm_kernel on tensor cores (MathMode::TF32 with M = MmaTf32, MathMode::BF16 with
// MmaBf16; kernels/cuda/igemm.h, TcTile): the same loaders, staging TcTile::KS stages of
// kBK per barrier, each element rounded to M's input format as it is stored; warp w
// multiplies rows warp_m0(w) + [0, WM) by columns warp_n0(w) + [0, WN) of the tile.
// tests/test_igemm_replay.cpp replays this schedule on the host too.
template <class P, class M>
__global__ void __launch_bounds__(P::T::NT) igemm_tc_kernel(const P p) {
  using T = typename P::T;
  using L = TcTile<T>;
  using AMap = typename P::AMap;
  using BMap = typename P::BMap;
  constexpr int BM = T::BM, BN = T::BN, KS = L::KS, MF = L::MF, NF = L::NF, W = L::BK / M::kPack;
  static_assert(L::BK % M::kK == 0, "a barrier stage holds whole mma k steps");
  constexpr int kAld = BM + kPadTc, kBld = BN + kPadTc;
  __shared__ __align__(16) uint32_t as[2][W][kAld];
  __shared__ __align__(16) uint32_t bs[2][W][kBld];

  const int z = blockIdx.z;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const int m_size = p.m_size(z);
  if (m0 >= m_size) return;
  int k0, k1;
  p.k_range(z, k0, k1);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm0 = L::warp_m0(warp), wn0 = L::warp_n0(warp);

  typename P::ALoader la;
  typename P::BLoader lb;
  p.init_a(la, z, m0, k0, k1, tid);
  p.init_b(lb, z, n0, k0, k1, tid);
  float ra[KS][AMap::S], rb[KS][BMap::S];
  float acc[MF][NF][4];
  TRICK_UNROLL
  for (int i = 0; i < MF; ++i) {
    TRICK_UNROLL
    for (int j = 0; j < NF; ++j) {
      TRICK_UNROLL
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;
    }
  }

  // Stages t*KS .. t*KS+KS-1 into registers (the loaders step once per kBK stage; past k1
  // they load zeros), then into buffer `buf`, rounded.
  auto fetch = [&](bool first) {
    TRICK_UNROLL
    for (int s = 0; s < KS; ++s) {
      if (!first || s > 0) {
        p.next_a(la);
        p.next_b(lb);
      }
      p.load_a(la, ra[s]);
      p.load_b(lb, rb[s]);
    }
  };
  auto store = [&](int buf) {
    TRICK_UNROLL
    for (int s = 0; s < KS; ++s) {
      TRICK_UNROLL
      for (int j = 0; j < AMap::S; ++j)
        stage<M>(&as[buf][0][0], kAld, s * kBK + AMap::kk(tid, j), AMap::row(tid, j), ra[s][j]);
      TRICK_UNROLL
      for (int j = 0; j < BMap::S; ++j)
        stage<M>(&bs[buf][0][0], kBld, s * kBK + BMap::kk(tid, j), BMap::row(tid, j), rb[s][j]);
    }
  };

  const int stages = k1 > k0 ? (k1 - k0 + L::BK - 1) / L::BK : 0;
  if (stages > 0) {
    fetch(true);
    store(0);
    __syncthreads();
    for (int t = 0; t < stages; ++t) {
      const int cur = t & 1;
      const bool more = t + 1 < stages;
      if (more) fetch(false);  // global loads of the next KS stages, in flight during the math below
      TRICK_UNROLL
      for (int kw = 0; kw < W; kw += M::kK / M::kPack) {  // one mma k step: kK elements, kK / kPack words
        uint32_t a[MF][4], b[NF][2];
        TRICK_UNROLL
        for (int i = 0; i < MF; ++i) {
          TRICK_UNROLL
          for (int r = 0; r < 4; ++r) a[i][r] = as[cur][kw + M::a_word(lane, r)][wm0 + i * 16 + M::a_row(lane, r)];
        }
        TRICK_UNROLL
        for (int j = 0; j < NF; ++j) {
          TRICK_UNROLL
          for (int r = 0; r < 2; ++r) b[j][r] = bs[cur][kw + M::b_word(lane, r)][wn0 + j * 8 + M::b_col(lane)];
        }
#if defined(TRICK_CUDA_EMU)
        // The CUDA emulator: these MF x NF products in one exchange among the warp's lanes,
        // not one each (kernels/cuda/emu/README.md).
        ::trick::emu::mma_many(M::kPack == 2, &acc[0][0][0], &a[0][0], &b[0][0], MF, NF);
#else
        TRICK_UNROLL
        for (int i = 0; i < MF; ++i) {
          TRICK_UNROLL
          for (int j = 0; j < NF; ++j) mma(M{}, acc[i][j], a[i], b[j]);
        }
#endif
      }
      if (more) store(cur ^ 1);  // the other buffer was last read in stage t-1, before the barrier that ended it
      __syncthreads();
    }
  }

  const int n_size = p.n_size();
  TRICK_UNROLL
  for (int i = 0; i < MF; ++i) {
    TRICK_UNROLL
    for (int r = 0; r < 4; ++r) {
      const int m = m0 + wm0 + i * 16 + M::c_row(lane, r);
      if (m >= m_size) continue;
      float* row = p.row_ptr(z, m);
      TRICK_UNROLL
      for (int j = 0; j < NF; ++j) {
        const int n = n0 + wn0 + j * 8 + M::c_col(lane, r);
        if (n < n_size) row[n] = p.ep.apply(acc[i][j][r], n, row + n);
      }
    }
  }
}

// Launches problem p over the grid of extent e (kernels/cuda/igemm.h builds both): on
// tensor cores under MathMode::TF32 or BF16 (kernels/backend.h), else in fp32. The caller
// checked that sizes fit in int.
template <class P>
void launch(const P& p, const Extent& e) {
  if (e.m <= 0 || e.n <= 0 || e.z <= 0) return;
  const int64_t gx = (e.m + P::T::BM - 1) / P::T::BM, gy = (e.n + P::T::BN - 1) / P::T::BN;
  TRICK_CHECK(gx <= INT32_MAX && gy <= 65535 && e.z <= 65535, "igemm: grid (", gx, ", ", gy, ", ", e.z,
              ") exceeds the CUDA grid limits");
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(e.z));
  const MathMode mode = math_mode();
  if (mode != MathMode::FP32) {
    TRICK_CHECK(compute_capability() >= 80, "igemm: ", math_mode_name(mode),
                " tensor cores need compute capability 8.0 or later (this GPU: ", compute_capability() / 10, ".",
                compute_capability() % 10, "); run without --", math_mode_name(mode));
    if (mode == MathMode::TF32)
      igemm_tc_kernel<P, MmaTf32><<<grid, P::T::NT, 0, stream()>>>(p);
    else
      igemm_tc_kernel<P, MmaBf16><<<grid, P::T::NT, 0, stream()>>>(p);
    TRICK_CUDA_LAUNCHED(igemm_tc_kernel);
    return;
  }
  igemm_kernel<P><<<grid, P::T::NT, 0, stream()>>>(p);
  TRICK_CUDA_LAUNCHED(igemm_kernel);
}

// Output element (r, c) of a split problem (kernels/cuda/igemm.h, split_sum).
struct SplitSumF {
  const float* parts;  // (splits, rows, n)
  float* out;
  int64_t ld, part_stride;
  uint32_t n;
  int splits;
  Epilogue ep;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    float* o = out + r * ld + c;
    *o = split_sum(parts + static_cast<int64_t>(r) * n + c, part_stride, splits, ep, static_cast<int>(c), o);
  }
};

// Launches a forward, dgrad or GEMM problem, split over k (SplitKProblem) when its grid is
// too small for the GPU under the split-K policy (kernels/backend.h): the partials go to
// the SplitK workspace and a second pass adds them into the output.
template <class P>
void launch_split(const char* op, const P& p, const Extent& e) {
  const SplitKPolicy policy = split_k_policy();
  const int64_t count = p.out_rows() * p.n_size();
  const KSplit ks = k_split<typename P::T>(e, p.k_max(), count, sm_count(), policy.warps_per_sm, policy.min_k);
  if (ks.splits == 1) {
    launch(p, e);
    return;
  }
  float* parts = workspace_as<float>(Workspace::SplitK, static_cast<size_t>(ks.splits * count));
  launch(split_k_problem(p, parts, ks), split_extent(e, ks));
  launch_map(op, p.out_rows(), p.n_size(),
             SplitSumF{parts, p.out(), p.out_ld(), count, static_cast<uint32_t>(p.n_size()),
                       static_cast<int>(ks.splits), p.ep});
}

// Large tiles when they still give every multiprocessor a block; else small ones.
inline bool use_large_tiles(const Extent& e) {
  const int64_t blocks = ((e.m + Large::BM - 1) / Large::BM) * ((e.n + Large::BN - 1) / Large::BN) * e.z;
  return e.m > Small::BM && e.n > Small::BN && blocks >= sm_count();
}

// Calls f(T{}) with the tile for a problem of extent e: Large when they still give every
// multiprocessor a block, Narrow when N fits in its 32 columns, else Small.
template <class F>
void with_tile(const Extent& e, F&& f) {
  if (use_large_tiles(e))
    f(Large{});
  else if (e.n <= Narrow::BN)
    f(Narrow{});
  else
    f(Small{});
}

}  // namespace igemm
}  // namespace cuda
}  // namespace trick
