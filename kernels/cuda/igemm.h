// The index math of the tiled (implicit-)GEMM kernel in kernels/cuda/igemm.cuh: tile
// shapes, which element each thread stages into shared memory, and the four problems
// that run on it. Plain C++ with __host__ __device__ under nvcc, so tests/test_igemm_replay.cpp
// replays the kernel's exact schedule on the host against the CPU convolution.
//
// Every problem is C(m, n) = epilogue(sum over k of A(m, k) * B(k, n)) where
//   gemm        A = op(A), B = op(B), C row-major with ldc
//   conv fwd    m = output pixel (n, oy, ox), n = output channel, k = (ky, kx, c);
//               A = the input patch (im2col, never stored), B = w^T, C = y rows
//   conv dgrad  for each stride phase z = (ry, rx) (blockIdx.z): m = input pixel with
//               (iy + pt) % sh == ry and (ix + pl) % sw == rx, n = input channel,
//               k = (ti, tj, o) over the taps ky = ry + ti*sh, kx = rx + tj*sw only (the
//               only taps that reach such pixels): A = dy at oy = (iy + pt - ky) / sh,
//               B = w; no multiply by an inserted zero, whatever the stride
//   conv wgrad  m = output channel, n = (ky, kx, c), k = output pixel p over a split-K
//               range of N*OH*OW per blockIdx.z: A = dy^T, B = the input patch
// and SplitKProblem runs any of the first three over k ranges when its grid is too small
// to fill the GPU (batch 1), for split_sum to add up.
//
// Shared memory holds BK-deep slices of A and B as As[k][m] and Bs[k][n]; thread (ty, tx)
// accumulates the 8 x TN elements rows Tile::row(ty, i), cols Tile::col(tx, j), TN 8 or 4.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/fast_div.h"
#include "kernels/tensor_core_rounding.h"

#if defined(__CUDA_ARCH__)  // the device pass only: the host compiler does not know the pragma
#define TRICK_UNROLL _Pragma("unroll")
#else
#define TRICK_UNROLL
#endif

namespace trick {
namespace cuda {
namespace igemm {

constexpr int kBK = 8;   // reduction depth of one shared-memory stage
constexpr int kPad = 4;  // floats after each shared row: conflict-free transposed stores, 16-byte aligned rows

template <int BM_, int BN_, int TN_ = 8>
struct Tile {
  static constexpr int BM = BM_, BN = BN_;
  static constexpr int TM = 8, TN = TN_;  // accumulators per thread
  static constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;
  static_assert(BM % 8 == 0 && BN % TN == 0 && (TN == 8 || TN == 4), "tiles hold whole TM x TN thread blocks");
  // A thread's rows are two runs of four, BM/2 apart, so a warp's float4 reads of one
  // shared row are contiguous (no bank conflicts); the same for 8 columns (TN = 4: one run).
  static TRICK_HD int row(int ty, int i) { return (i < 4 ? 0 : BM / 2) + ty * 4 + (i & 3); }
  static TRICK_HD int col(int tx, int j) { return (j < 4 ? 0 : BN / 2) + tx * 4 + (j & 3); }
};
using Large = Tile<128, 128>;     // 256 threads
using Small = Tile<64, 64>;       // 64 threads: for small problems, more blocks
using Narrow = Tile<128, 32, 4>;  // 128 threads of 8 x 4: for N <= 32 (a 64-wide tile would idle half)

// Which element of a BR x kBK operand slice slot j of thread tid stages.
// KMajor: consecutive threads take consecutive k (operand contiguous along k).
template <int BR, int NT>
struct KMajor {
  static_assert(NT % kBK == 0 && (BR * kBK) % NT == 0, "threads must tile the slice");
  static constexpr int S = BR * kBK / NT;  // slots per thread
  static TRICK_HD int row(int tid, int j) { return tid / kBK + j * (NT / kBK); }
  static TRICK_HD int kk(int tid, int) { return tid % kBK; }
};
// RowMajor: consecutive threads take consecutive rows (operand contiguous along rows).
template <int BR, int NT>
struct RowMajor {
  static_assert(NT % BR == 0 && (BR * kBK) % NT == 0, "threads must tile the slice");
  static constexpr int S = BR * kBK / NT;
  static TRICK_HD int row(int tid, int) { return tid % BR; }
  static TRICK_HD int kk(int tid, int j) { return tid / BR + j * (NT / BR); }
  static TRICK_HD int koff(int j) { return j * (NT / BR); }  // kk(tid, j) - kk(tid, 0)
};

// --- tensor cores (MathMode::TF32 and MathMode::BF16) ---------------------------------
//
// igemm_tc_kernel runs the same problems, loaders and shared-memory staging on tensor cores:
// every element is rounded to the mode's input format as it is stored to shared memory
// (round_tf32, bf16_bits), and each warp multiplies its WM x WN part of the block's tile
// as MF x NF fragments of one mma.sync per k step, accumulating in fp32:
//   TF32  mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32    (MmaTf32)
//   BF16  mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32   (MmaBf16)
// Shared memory holds 32-bit words: one TF32 element, or two bf16 elements adjacent in k
// (the lower k in the low half), which is how the bf16 fragments hold them.

constexpr int kPadTc = 8;  // rows of BM + 8 words (= 8 mod 32 banks): a warp's fragment reads hit 32 banks

// The rounding (round_tf32 ties away from zero, bf16_bits ties to even) is shared with the
// CPU's emulation of the modes: kernels/tensor_core_rounding.h.
using ::trick::bf16_bits;
using ::trick::bits_float;
using ::trick::float_bits;
using ::trick::round_bf16;
using ::trick::round_tf32;

// Where lane = 4 * g + t of a warp keeps the elements of the fragments of
// mma.sync.aligned.m16n8k8 with .tf32 operands (PTX ISA, "Matrix fragments for mma.m16n8k8"),
// as shared words (one element each, so word = k):
//   A (16 x 8):  a[r] at row g + 8 * (r & 1),  k t + 4 * (r >> 1)
//   B (8 x 8):   b[r] at k t + 4 * r,          column g
//   C (16 x 8):  c[r] at row g + 8 * (r >> 1), column 2 * t + (r & 1)
struct MmaTf32 {
  static constexpr int kK = 8;     // k of one mma
  static constexpr int kPack = 1;  // elements per 32-bit register and shared word, along k
  static TRICK_HD int a_row(int lane, int r) { return lane / 4 + 8 * (r & 1); }
  static TRICK_HD int a_word(int lane, int r) { return lane % 4 + 4 * (r >> 1); }
  static TRICK_HD int b_word(int lane, int r) { return lane % 4 + 4 * r; }
  static TRICK_HD int b_col(int lane) { return lane / 4; }
  static TRICK_HD int c_row(int lane, int r) { return lane / 4 + 8 * (r >> 1); }
  static TRICK_HD int c_col(int lane, int r) { return 2 * (lane % 4) + (r & 1); }
};

// The same for mma.sync.aligned.m16n8k16 with .bf16 operands (PTX ISA, "Matrix fragments
// for mma.m16n8k16 with floating point type"): each 32-bit register holds two elements
// adjacent in k, the lower k in the low 16 bits, so a register is one shared word
// (word = k / 2):
//   A (16 x 16): a[r] at row g + 8 * (r & 1),  k 2t + 8 * (r >> 1) + {0, 1}
//   B (16 x 8):  b[r] at k 2t + 8 * r + {0, 1}, column g
//   C (16 x 8):  as m16n8k8
// In words these are MmaTf32's indices; the k step and the staging differ.
struct MmaBf16 : MmaTf32 {
  static constexpr int kK = 16;
  static constexpr int kPack = 2;
};

// Stages element x at (k, row) of a shared slice of 32-bit words with rows of ld, rounded
// to M's input format: TF32 fills word (k, row); bf16 fills the half of word (k / 2, row)
// for k's parity, the lower k in the low half (bytes 0-1: GPUs and the host replay's x86
// and ARM are little-endian). One 16-bit store on the GPU: the other half belongs to
// another thread, so no read-modify-write.
template <class M>
TRICK_HD void stage(uint32_t* slice, int ld, int k, int row, float x) {
  if constexpr (M::kPack == 1) {
    slice[k * ld + row] = float_bits(round_tf32(x));
  } else {
    uint32_t* word = slice + (k / 2) * ld + row;
    const uint16_t h = bf16_bits(x);
#if defined(__CUDA_ARCH__)
    // st.shared.u16 rather than a uint16_t* store into the uint32_t array (no type punning)
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(word)) + 2u * static_cast<uint32_t>(k & 1);
    asm volatile("st.shared.u16 [%0], %1;\n" : : "r"(addr), "h"(h) : "memory");
#else
    std::memcpy(reinterpret_cast<unsigned char*>(word) + 2 * (k & 1), &h, sizeof h);
#endif
  }
}

// How a tile's warps share it on tensor cores: WARPS_M x WARPS_N warps of WM x WN, a warp
// at most 32 columns wide (Large: 2 x 4 warps of 64 x 32; Small: 1 x 2 of 64 x 32; Narrow:
// 4 x 1 of 32 x 32), so each thread holds as many accumulators as on the fp32 kernel.
template <class T>
struct TcTile {
  static constexpr int kWarps = T::NT / 32;
  static constexpr int WARPS_N = T::BN / 32 < kWarps ? T::BN / 32 : kWarps;
  static constexpr int WARPS_M = kWarps / WARPS_N;
  static constexpr int WM = T::BM / WARPS_M, WN = T::BN / WARPS_N;
  static constexpr int MF = WM / 16, NF = WN / 8;  // m16 x n8 fragments per warp and k step
  static_assert(T::NT % 32 == 0 && WARPS_N >= 1 && kWarps % WARPS_N == 0 && WARPS_M * WM == T::BM &&
                    WARPS_N * WN == T::BN && WM % 16 == 0 && WN % 8 == 0,
                "warps must tile the block's tile in whole fragments");
  // kBK stages per barrier: 2 where both operands, double-buffered, fit in 48 KiB of static
  // shared memory (all three tiles; bf16 needs half). 4 pushed the small tiles to 255
  // registers (ptxas -v). BK = 16 is one bf16 k step, two TF32 ones.
  static constexpr int kStageBytes = 2 * kBK * (T::BM + T::BN + 2 * kPadTc) * static_cast<int>(sizeof(float));
  static constexpr int KS = 2 * kStageBytes <= 48 * 1024 ? 2 : 1;
  static constexpr int BK = KS * kBK;
  // The warp's first row and column in the block's tile.
  static TRICK_HD int warp_m0(int warp) { return (warp / WARPS_N) * WM; }
  static TRICK_HD int warp_n0(int warp) { return (warp % WARPS_N) * WN; }
};

// What is written: v = alpha * acc (+ bias[n]) (+ beta * old, read only when beta != 0),
// then max(v, 0) as (v > 0 ? v : 0) when relu, as the CPU epilogue does.
struct Epilogue {
  float alpha = 1.f, beta = 0.f;
  const float* bias = nullptr;
  bool relu = false;
  TRICK_HD float apply(float acc, int n, const float* old) const {
    float v = alpha * acc;
    if (bias) v += bias[n];
    if (beta != 0.f) v += beta * *old;
    if (relu) v = v > 0.f ? v : 0.f;
    return v;
  }
};

// --- operand loaders -----------------------------------------------------------------

// Element (r, k) at p[r * ld + k]: rows [0, rows), k in [k0, k1), zero outside.
template <class Map>
struct KContigLoader {
  const float* ptr[Map::S];
  bool ok[Map::S];
  int k, k1;
  TRICK_HD void init(const float* p, int64_t ld, int rows, int row0, int k0, int k1_, int tid) {
    TRICK_UNROLL
    for (int j = 0; j < Map::S; ++j) {
      const int r = row0 + Map::row(tid, j);
      ok[j] = r < rows;
      ptr[j] = p + (ok[j] ? static_cast<int64_t>(r) * ld : 0);
    }
    k = k0 + Map::kk(tid, 0);
    k1 = k1_;
  }
  TRICK_HD void load(float* out) const {
    const bool kin = k < k1;
    TRICK_UNROLL
    for (int j = 0; j < Map::S; ++j) out[j] = (ok[j] && kin) ? ptr[j][k] : 0.f;
  }
  TRICK_HD void next() { k += kBK; }
};

// Element (r, k) at p[k * ld + r].
template <class Map>
struct RowContigLoader {
  const float* ptr;
  int64_t ld;
  bool ok;
  int kb, k1;  // kb: the k of slot 0
  TRICK_HD void init(const float* p, int64_t ld_, int rows, int row0, int k0, int k1_, int tid) {
    const int r = row0 + Map::row(tid, 0);
    ok = r < rows;
    ptr = p + (ok ? r : 0);
    ld = ld_;
    kb = k0 + Map::kk(tid, 0);
    k1 = k1_;
  }
  TRICK_HD void load(float* out) const {
    TRICK_UNROLL
    for (int j = 0; j < Map::S; ++j) {
      const int k = kb + Map::koff(j);
      out[j] = (ok && k < k1) ? ptr[static_cast<int64_t>(k) * ld] : 0.f;
    }
  }
  TRICK_HD void next() { kb += kBK; }
};

// --- problems ------------------------------------------------------------------------

template <bool TransA, bool TransB, class T_>
struct GemmProblem {
  using T = T_;
  using AMap = typename std::conditional<TransA, RowMajor<T::BM, T::NT>, KMajor<T::BM, T::NT>>::type;
  using BMap = typename std::conditional<TransB, KMajor<T::BN, T::NT>, RowMajor<T::BN, T::NT>>::type;
  using ALoader = typename std::conditional<TransA, RowContigLoader<AMap>, KContigLoader<AMap>>::type;
  using BLoader = typename std::conditional<TransB, KContigLoader<BMap>, RowContigLoader<BMap>>::type;

  const float* a;  // (M, K) lda, or (K, M) when TransA
  const float* b;  // (K, N) ldb, or (N, K) when TransB
  float* c;        // (M, N) ldc
  int64_t lda, ldb, ldc;
  int m, n, k;
  Epilogue ep;

  TRICK_HD int m_size(int) const { return m; }
  TRICK_HD int n_size() const { return n; }
  TRICK_HD void k_range(int, int& k0, int& k1) const { k0 = 0, k1 = k; }
  TRICK_HD int k_max() const { return k; }
  // The output: out_rows() rows of n_size() at out() + row * out_ld(); row r of z is out_row(z, r).
  TRICK_HD int64_t out_rows() const { return m; }
  TRICK_HD float* out() const { return c; }
  TRICK_HD int64_t out_ld() const { return ldc; }
  TRICK_HD int64_t out_row(int, int r) const { return r; }
  TRICK_HD float* row_ptr(int z, int r) const { return c + out_row(z, r) * ldc; }
  TRICK_HD void init_a(ALoader& l, int, int row0, int k0, int k1, int tid) const {
    l.init(a, lda, m, row0, k0, k1, tid);
  }
  TRICK_HD void init_b(BLoader& l, int, int row0, int k0, int k1, int tid) const {
    l.init(b, ldb, n, row0, k0, k1, tid);
  }
  TRICK_HD void load_a(const ALoader& l, float* out) const { l.load(out); }
  TRICK_HD void load_b(const BLoader& l, float* out) const { l.load(out); }
  TRICK_HD void next_a(ALoader& l) const { l.next(); }
  TRICK_HD void next_b(BLoader& l) const { l.next(); }
};

// A convolution's sizes, all of which the launcher checked to fit in int (with the
// products used in int arithmetic: n*h*w, n*oh*ow, kh*kw*c, kh*kw*o).
struct ConvShape {
  int n, h, w, c;      // input (N, H, W, C)
  int oh, ow, o;       // output (N, OH, OW, O)
  int kh, kw;          // kernel
  int sh, sw, pt, pl;  // stride; top and left padding (bottom/right only shape OH, OW)
};

template <class T_>
struct ConvForwardProblem {
  using T = T_;
  using AMap = KMajor<T::BM, T::NT>;
  using BMap = KMajor<T::BN, T::NT>;
  // A(m, k) = x[n, oy*sh - pt + ky, ox*sw - pl + kx, c]: per slot the pixel's image and
  // window origin; per thread one k = (ky, kx, c), stepped by kBK without divisions.
  struct ALoader {
    const float* img[AMap::S];
    int iy0[AMap::S], ix0[AMap::S];
    bool ok[AMap::S];
    int c, kx, ky, k, k1;
  };
  using BLoader = KContigLoader<BMap>;

  ConvShape g;
  const float* x;  // (N, H, W, C) rows ldx
  const float* w;  // (O, KH, KW, C) contiguous = (O, K)
  float* y;        // (N, OH, OW, O) rows ldy
  int64_t ldx, ldy;
  int m, k;  // N*OH*OW, KH*KW*C
  Epilogue ep;

  TRICK_HD int m_size(int) const { return m; }
  TRICK_HD int n_size() const { return g.o; }
  TRICK_HD void k_range(int, int& k0, int& k1) const { k0 = 0, k1 = k; }
  TRICK_HD int k_max() const { return k; }
  TRICK_HD int64_t out_rows() const { return m; }
  TRICK_HD float* out() const { return y; }
  TRICK_HD int64_t out_ld() const { return ldy; }
  TRICK_HD int64_t out_row(int, int r) const { return r; }
  TRICK_HD float* row_ptr(int z, int r) const { return y + out_row(z, r) * ldy; }

  TRICK_HD void init_a(ALoader& l, int, int row0, int k0, int k1, int tid) const {
    const int ohw = g.oh * g.ow;
    TRICK_UNROLL
    for (int j = 0; j < AMap::S; ++j) {
      const int r = row0 + AMap::row(tid, j);
      l.ok[j] = r < m;
      const int rr = l.ok[j] ? r : 0;
      const int b = rr / ohw, rem = rr - b * ohw;
      const int oy = rem / g.ow, ox = rem - oy * g.ow;
      l.iy0[j] = oy * g.sh - g.pt;
      l.ix0[j] = ox * g.sw - g.pl;
      l.img[j] = x + static_cast<int64_t>(b) * g.h * g.w * ldx;
    }
    l.k = k0 + AMap::kk(tid, 0);
    l.k1 = k1;
    l.c = l.kx = l.ky = 0;
    if (k1 > k0) {  // then C, KW > 0
      const int t = l.k / g.c;
      l.c = l.k - t * g.c;
      l.ky = t / g.kw;
      l.kx = t - l.ky * g.kw;
    }
  }
  TRICK_HD void load_a(const ALoader& l, float* out) const {
    const bool kin = l.k < l.k1;
    TRICK_UNROLL
    for (int j = 0; j < AMap::S; ++j) {
      const int iy = l.iy0[j] + l.ky, ix = l.ix0[j] + l.kx;
      const bool in = l.ok[j] && kin && static_cast<unsigned>(iy) < static_cast<unsigned>(g.h) &&
                      static_cast<unsigned>(ix) < static_cast<unsigned>(g.w);
      out[j] = in ? l.img[j][(static_cast<int64_t>(iy) * g.w + ix) * ldx + l.c] : 0.f;
    }
  }
  TRICK_HD void next_a(ALoader& l) const {  // only called while k < K, so C > 0
    l.k += kBK;
    l.c += kBK;
    while (l.c >= g.c) {
      l.c -= g.c;
      if (++l.kx == g.kw) l.kx = 0, ++l.ky;
    }
  }
  TRICK_HD void init_b(BLoader& l, int, int row0, int k0, int k1, int tid) const {
    l.init(w, k, g.o, row0, k0, k1, tid);
  }
  TRICK_HD void load_b(const BLoader& l, float* out) const { l.load(out); }
  TRICK_HD void next_b(BLoader& l) const { l.next(); }
};

// Stride phase z = ry * sw + rx of the data gradient: the input pixels with
// (iy + pt) % sh == ry and (ix + pl) % sw == rx, and the taps that reach them.
struct DgradPhase {
  int ry, rx;    // residues
  int iy0, ix0;  // first input row / column of the phase
  int hp, wp;    // rows / columns of the phase
  int nkh, nkw;  // taps ky = ry + ti*sh (ti < nkh), kx = rx + tj*sw (tj < nkw)
};

TRICK_HD DgradPhase dgrad_phase(const ConvShape& g, int z) {
  DgradPhase p;
  p.ry = z / g.sw;
  p.rx = z - p.ry * g.sw;
  p.iy0 = ((p.ry - g.pt) % g.sh + g.sh) % g.sh;
  p.ix0 = ((p.rx - g.pl) % g.sw + g.sw) % g.sw;
  p.hp = p.iy0 < g.h ? (g.h - p.iy0 + g.sh - 1) / g.sh : 0;
  p.wp = p.ix0 < g.w ? (g.w - p.ix0 + g.sw - 1) / g.sw : 0;
  p.nkh = p.ry < g.kh ? (g.kh - p.ry + g.sh - 1) / g.sh : 0;
  p.nkw = p.rx < g.kw ? (g.kw - p.rx + g.sw - 1) / g.sw : 0;
  return p;
}

// Row r of phase p -> image b and input pixel (iy, ix).
TRICK_HD void dgrad_pixel(const ConvShape& g, const DgradPhase& p, int r, int& b, int& iy, int& ix) {
  const int hw = p.hp * p.wp;
  b = r / hw;
  const int rem = r - b * hw;
  const int jy = rem / p.wp, jx = rem - jy * p.wp;
  iy = p.iy0 + jy * g.sh;
  ix = p.ix0 + jx * g.sw;
}

template <class T_>
struct ConvDgradProblem {
  using T = T_;
  using AMap = KMajor<T::BM, T::NT>;
  using BMap = RowMajor<T::BN, T::NT>;
  // A(m, k) = dy[b, by - ti, bx - tj, o] with by = (iy + pt - ry) / sh (exact), k = (ti, tj, o).
  struct ALoader {
    const float* img[AMap::S];
    int by[AMap::S], bx[AMap::S];
    bool ok[AMap::S];
    int o, tj, ti, nkw, k, k1;
  };
  // B(k, n) = w[o, ry + ti*sh, rx + tj*sw, c] for this thread's channel c = n.
  struct BLoader {
    bool ok;
    int c, ry, rx, nkw, k1;
    int k[BMap::S], o[BMap::S], tj[BMap::S], ti[BMap::S];
  };

  ConvShape g;
  const float* dy;  // (N, OH, OW, O) rows lddy
  const float* w;   // (O, KH, KW, C)
  float* dx;        // (N, H, W, C) rows lddx
  int64_t lddy, lddx;
  Epilogue ep;

  TRICK_HD int m_size(int z) const {
    const DgradPhase p = dgrad_phase(g, z);
    return g.n * p.hp * p.wp;
  }
  TRICK_HD int n_size() const { return g.c; }
  TRICK_HD void k_range(int z, int& k0, int& k1) const {
    const DgradPhase p = dgrad_phase(g, z);
    k0 = 0, k1 = p.nkh * p.nkw * g.o;
  }
  // The most taps any phase has (phase 0's): ceil(KH / SH) * ceil(KW / SW) * O.
  TRICK_HD int k_max() const { return ((g.kh + g.sh - 1) / g.sh) * ((g.kw + g.sw - 1) / g.sw) * g.o; }
  TRICK_HD int64_t out_rows() const { return static_cast<int64_t>(g.n) * g.h * g.w; }
  TRICK_HD float* out() const { return dx; }
  TRICK_HD int64_t out_ld() const { return lddx; }
  TRICK_HD int64_t out_row(int z, int r) const {
    int b, iy, ix;
    dgrad_pixel(g, dgrad_phase(g, z), r, b, iy, ix);
    return static_cast<int64_t>(b * g.h + iy) * g.w + ix;
  }
  TRICK_HD float* row_ptr(int z, int r) const { return dx + out_row(z, r) * lddx; }

  TRICK_HD void init_a(ALoader& l, int z, int row0, int k0, int k1, int tid) const {
    const DgradPhase p = dgrad_phase(g, z);
    const int mp = g.n * p.hp * p.wp;
    TRICK_UNROLL
    for (int j = 0; j < AMap::S; ++j) {
      const int r = row0 + AMap::row(tid, j);
      l.ok[j] = r < mp;
      int b, iy, ix;
      dgrad_pixel(g, p, l.ok[j] ? r : 0, b, iy, ix);
      l.by[j] = (iy + g.pt - p.ry) / g.sh;
      l.bx[j] = (ix + g.pl - p.rx) / g.sw;
      l.img[j] = dy + static_cast<int64_t>(b) * g.oh * g.ow * lddy;
    }
    l.k = k0 + AMap::kk(tid, 0);
    l.k1 = k1;
    l.nkw = p.nkw;
    l.o = l.tj = l.ti = 0;
    if (k1 > k0) {  // then O, nkw > 0
      const int t = l.k / g.o;
      l.o = l.k - t * g.o;
      l.ti = t / p.nkw;
      l.tj = t - l.ti * p.nkw;
    }
  }
  TRICK_HD void load_a(const ALoader& l, float* out) const {
    const bool kin = l.k < l.k1;
    TRICK_UNROLL
    for (int j = 0; j < AMap::S; ++j) {
      const int oy = l.by[j] - l.ti, ox = l.bx[j] - l.tj;
      const bool in = l.ok[j] && kin && static_cast<unsigned>(oy) < static_cast<unsigned>(g.oh) &&
                      static_cast<unsigned>(ox) < static_cast<unsigned>(g.ow);
      out[j] = in ? l.img[j][(static_cast<int64_t>(oy) * g.ow + ox) * lddy + l.o] : 0.f;
    }
  }
  TRICK_HD void next_a(ALoader& l) const {
    l.k += kBK;
    l.o += kBK;
    while (l.o >= g.o) {
      l.o -= g.o;
      if (++l.tj == l.nkw) l.tj = 0, ++l.ti;
    }
  }

  TRICK_HD void init_b(BLoader& l, int z, int row0, int k0, int k1, int tid) const {
    const DgradPhase p = dgrad_phase(g, z);
    l.c = row0 + BMap::row(tid, 0);
    l.ok = l.c < g.c;
    l.ry = p.ry, l.rx = p.rx, l.nkw = p.nkw, l.k1 = k1;
    TRICK_UNROLL
    for (int j = 0; j < BMap::S; ++j) {
      l.k[j] = k0 + BMap::kk(tid, j);
      l.o[j] = l.tj[j] = l.ti[j] = 0;
      if (k1 > k0) {
        const int t = l.k[j] / g.o;
        l.o[j] = l.k[j] - t * g.o;
        l.ti[j] = t / p.nkw;
        l.tj[j] = t - l.ti[j] * p.nkw;
      }
    }
  }
  TRICK_HD void load_b(const BLoader& l, float* out) const {
    TRICK_UNROLL
    for (int j = 0; j < BMap::S; ++j) {
      float v = 0.f;
      if (l.ok && l.k[j] < l.k1) {
        const int ky = l.ry + l.ti[j] * g.sh, kx = l.rx + l.tj[j] * g.sw;
        v = w[(static_cast<int64_t>(l.o[j] * g.kh + ky) * g.kw + kx) * g.c + l.c];
      }
      out[j] = v;
    }
  }
  TRICK_HD void next_b(BLoader& l) const {
    TRICK_UNROLL
    for (int j = 0; j < BMap::S; ++j) {
      l.k[j] += kBK;
      l.o[j] += kBK;
      while (l.o[j] >= g.o) {
        l.o[j] -= g.o;
        if (++l.tj[j] == l.nkw) l.tj[j] = 0, ++l.ti[j];
      }
    }
  }
};

template <class T_>
struct ConvWgradProblem {
  using T = T_;
  using AMap = RowMajor<T::BM, T::NT>;
  using BMap = RowMajor<T::BN, T::NT>;
  using ALoader = RowContigLoader<AMap>;  // A(o, p) = dy[p * lddy + o]
  // B(p, n) = x[b, oy*sh - pt + ky, ox*sw - pl + kx, c] for this thread's n = (ky, kx, c);
  // per slot the output pixel p = (b, oy, ox), stepped by kBK without divisions.
  struct BLoader {
    bool ok;
    int c, offy, offx, k1;
    int p[BMap::S], b[BMap::S], oy[BMap::S], ox[BMap::S];
  };

  ConvShape g;
  const float* x;   // (N, H, W, C) rows ldx
  const float* dy;  // (N, OH, OW, O) rows lddy
  float* out;       // split z writes (O, KH*KW*C) at out + z * split_stride
  int64_t ldx, lddy, split_stride;
  int kcols;           // KH*KW*C
  int p_total, chunk;  // N*OH*OW, output pixels per split (a multiple of kBK)
  Epilogue ep;

  TRICK_HD int m_size(int) const { return g.o; }
  TRICK_HD int n_size() const { return kcols; }
  TRICK_HD void k_range(int z, int& k0, int& k1) const {
    k0 = z * chunk;
    k1 = p_total - k0 < chunk ? p_total : k0 + chunk;
  }
  TRICK_HD float* row_ptr(int z, int r) const { return out + z * split_stride + static_cast<int64_t>(r) * kcols; }
  TRICK_HD void init_a(ALoader& l, int, int row0, int k0, int k1, int tid) const {
    l.init(dy, lddy, g.o, row0, k0, k1, tid);
  }
  TRICK_HD void load_a(const ALoader& l, float* out_) const { l.load(out_); }
  TRICK_HD void next_a(ALoader& l) const { l.next(); }

  TRICK_HD void init_b(BLoader& l, int, int row0, int k0, int k1, int tid) const {
    const int col = row0 + BMap::row(tid, 0);
    l.ok = col < kcols;
    const int cc = l.ok ? col : 0;
    const int t = cc / g.c;  // kcols > 0 here (else no block runs), so C > 0
    l.c = cc - t * g.c;
    const int ky = t / g.kw, kx = t - (t / g.kw) * g.kw;
    l.offy = ky - g.pt;
    l.offx = kx - g.pl;
    l.k1 = k1;
    const int ohw = g.oh * g.ow;
    TRICK_UNROLL
    for (int j = 0; j < BMap::S; ++j) {
      l.p[j] = k0 + BMap::kk(tid, j);
      l.b[j] = l.oy[j] = l.ox[j] = 0;
      if (k1 > k0) {  // then OH, OW > 0
        l.b[j] = l.p[j] / ohw;
        const int rem = l.p[j] - l.b[j] * ohw;
        l.oy[j] = rem / g.ow;
        l.ox[j] = rem - l.oy[j] * g.ow;
      }
    }
  }
  TRICK_HD void load_b(const BLoader& l, float* out_) const {
    TRICK_UNROLL
    for (int j = 0; j < BMap::S; ++j) {
      const int iy = l.oy[j] * g.sh + l.offy, ix = l.ox[j] * g.sw + l.offx;
      const bool in = l.ok && l.p[j] < l.k1 && static_cast<unsigned>(iy) < static_cast<unsigned>(g.h) &&
                      static_cast<unsigned>(ix) < static_cast<unsigned>(g.w);
      out_[j] = in ? x[(static_cast<int64_t>(l.b[j] * g.h + iy) * g.w + ix) * ldx + l.c] : 0.f;
    }
  }
  TRICK_HD void next_b(BLoader& l) const {
    TRICK_UNROLL
    for (int j = 0; j < BMap::S; ++j) {
      l.p[j] += kBK;
      l.ox[j] += kBK;
      while (l.ox[j] >= g.ow) {
        l.ox[j] -= g.ow;
        if (++l.oy[j] == g.oh) l.oy[j] = 0, ++l.b[j];
      }
    }
  }
};

// --- split-K ---------------------------------------------------------------------------

// The grid a problem needs: rows (the largest m_size over z), columns, and z count.
struct Extent {
  int64_t m, n, z;
};

// A forward, dgrad or GEMM problem whose grid cannot fill the GPU (at batch 1, a few dozen
// blocks on 132 multiprocessors, each looping over thousands of k) runs as `splits`
// problems over consecutive k ranges of `chunk`: blockIdx.z = z * splits + s computes
// range s of problem z's reduction and stores the plain partial sums (no epilogue) in
// parts + s * part_stride, laid out as the output's rows (out_row) of n_size() floats.
// split_sum then adds the partials in the order s = 0, 1, ... and applies the epilogue:
// deterministic, no atomics. A range past the end of its problem's k is empty and stores
// zeros, so every partial the sum reads was written.
template <class P>
struct SplitKProblem {
  using T = typename P::T;
  using AMap = typename P::AMap;
  using BMap = typename P::BMap;
  using ALoader = typename P::ALoader;
  using BLoader = typename P::BLoader;

  P p;
  float* parts;  // (splits, p.out_rows(), p.n_size())
  int64_t part_stride;
  int splits, chunk;
  Epilogue ep;  // the identity: alpha 1, no bias, no beta, no ReLU

  TRICK_HD int m_size(int z) const { return p.m_size(z / splits); }
  TRICK_HD int n_size() const { return p.n_size(); }
  TRICK_HD void k_range(int z, int& k0, int& k1) const {
    int a, b;
    p.k_range(z / splits, a, b);
    const int64_t lo = a + static_cast<int64_t>(z % splits) * chunk;
    k0 = lo < b ? static_cast<int>(lo) : b;
    k1 = b - k0 < chunk ? b : k0 + chunk;
  }
  TRICK_HD float* row_ptr(int z, int r) const {
    return parts + (z % splits) * part_stride + p.out_row(z / splits, r) * p.n_size();
  }
  TRICK_HD void init_a(ALoader& l, int z, int row0, int k0, int k1, int tid) const {
    p.init_a(l, z / splits, row0, k0, k1, tid);
  }
  TRICK_HD void init_b(BLoader& l, int z, int row0, int k0, int k1, int tid) const {
    p.init_b(l, z / splits, row0, k0, k1, tid);
  }
  TRICK_HD void load_a(const ALoader& l, float* out) const { p.load_a(l, out); }
  TRICK_HD void load_b(const BLoader& l, float* out) const { p.load_b(l, out); }
  TRICK_HD void next_a(ALoader& l) const { p.next_a(l); }
  TRICK_HD void next_b(BLoader& l) const { p.next_b(l); }
};

// How a problem splits its reduction. splits == 1: it runs whole.
struct KSplit {
  int64_t splits, chunk;
};

// Splits when the grid has fewer than warps_per_sm warps per multiprocessor: into enough
// ranges to reach that many, each at least min_k deep and a whole number of kBK stages,
// with the partials within 2^25 floats and the grid's z within 65535. warps_per_sm <= 0
// never splits. The policy comes from kernels/backend.h (split_k_policy).
template <class T>
KSplit k_split(const Extent& e, int64_t k_max, int64_t out_count, int sm_count, int warps_per_sm, int min_k) {
  const KSplit whole{1, k_max};
  const int64_t blocks = ((e.m + T::BM - 1) / T::BM) * ((e.n + T::BN - 1) / T::BN) * e.z;
  const int64_t target = int64_t{warps_per_sm} * sm_count * 32 / T::NT;
  if (warps_per_sm <= 0 || min_k <= 0 || blocks <= 0 || blocks >= target || out_count <= 0) return whole;
  int64_t splits = (target + blocks - 1) / blocks;
  splits = std::min<int64_t>(splits, k_max / min_k);
  splits = std::min<int64_t>(splits, (int64_t{1} << 25) / out_count);
  splits = std::min<int64_t>(splits, 65535 / e.z);
  if (splits < 2) return whole;
  int64_t chunk = (k_max + splits - 1) / splits;
  chunk = (chunk + kBK - 1) / kBK * kBK;
  splits = (k_max + chunk - 1) / chunk;
  return splits < 2 ? whole : KSplit{splits, chunk};
}

template <class P>
SplitKProblem<P> split_k_problem(const P& p, float* parts, const KSplit& ks) {
  SplitKProblem<P> s;
  s.p = p;
  s.parts = parts;
  s.part_stride = p.out_rows() * p.n_size();
  s.splits = static_cast<int>(ks.splits);
  s.chunk = static_cast<int>(ks.chunk);
  return s;
}
inline Extent split_extent(const Extent& e, const KSplit& ks) { return {e.m, e.n, e.z * ks.splits}; }

// Output element (row, n) of a split problem: the partials at part, part + stride, ...
// added in order, through the problem's epilogue (old: the output element itself).
TRICK_HD float split_sum(const float* part, int64_t stride, int splits, const Epilogue& ep, int n, const float* old) {
  float s = 0.f;
  for (int z = 0; z < splits; ++z) s += part[z * stride];
  return ep.apply(s, n, old);
}

// --- problem set-up, shared by the launchers and the host replay in the tests --------

template <class T>
ConvForwardProblem<T> forward_problem(const ConvShape& g, const float* x, int64_t ldx, const float* w, float* y,
                                      int64_t ldy, const float* bias, bool relu) {
  ConvForwardProblem<T> p;
  p.g = g;
  p.x = x, p.w = w, p.y = y;
  p.ldx = ldx, p.ldy = ldy;
  p.m = g.n * g.oh * g.ow;
  p.k = g.kh * g.kw * g.c;
  p.ep.bias = bias;
  p.ep.relu = relu;
  return p;
}
inline Extent forward_extent(const ConvShape& g) { return {int64_t{g.n} * g.oh * g.ow, g.o, 1}; }

// Every input pixel lies in exactly one phase and every phase is launched whole (one with
// no taps writes zeros, or leaves dx as it was when accumulating), so dx needs no
// separate clearing pass.
template <class T>
ConvDgradProblem<T> dgrad_problem(const ConvShape& g, const float* dy, int64_t lddy, const float* w, float* dx,
                                  int64_t lddx, bool accumulate) {
  ConvDgradProblem<T> p;
  p.g = g;
  p.dy = dy, p.w = w, p.dx = dx;
  p.lddy = lddy, p.lddx = lddx;
  p.ep.beta = accumulate ? 1.f : 0.f;
  return p;
}
inline Extent dgrad_extent(const ConvShape& g) {
  return {int64_t{g.n} * ((g.h + g.sh - 1) / g.sh) * ((g.w + g.sw - 1) / g.sw), g.c, int64_t{g.sh} * g.sw};
}

// How wgrad splits its N*OH*OW reduction: enough splits for ~2 blocks per multiprocessor,
// but at least 256 pixels per split, partial products within 2^25 floats, and a chunk
// that is a whole number of kBK stages.
struct WgradSplit {
  int64_t splits, chunk;
};
template <class T>
WgradSplit wgrad_split(const ConvShape& g, int sm_count) {
  const int64_t o = g.o, kc = int64_t{g.kh} * g.kw * g.c, p_total = int64_t{g.n} * g.oh * g.ow;
  const int64_t tiles = ((o + T::BM - 1) / T::BM) * ((kc + T::BN - 1) / T::BN);
  int64_t splits = (2 * int64_t{sm_count} + tiles - 1) / (tiles > 0 ? tiles : 1);
  splits = splits < 1 ? 1 : splits;
  const int64_t by_work = p_total / 256 > 1 ? p_total / 256 : 1;
  const int64_t by_memory = o * kc > 0 && (int64_t{1} << 25) / (o * kc) > 1 ? (int64_t{1} << 25) / (o * kc) : 1;
  splits = splits < by_work ? splits : by_work;
  splits = splits < by_memory ? splits : by_memory;
  splits = splits < 65535 ? splits : 65535;
  int64_t chunk = (p_total + splits - 1) / splits;
  chunk = (chunk + kBK - 1) / kBK * kBK;
  chunk = chunk < kBK ? kBK : chunk;
  splits = (p_total + chunk - 1) / chunk;
  return {splits < 1 ? 1 : splits, chunk};
}

// Split z writes its partial dw (O, KH*KW*C) at out + z * split_stride; with one split,
// out is dw itself and beta says whether to accumulate.
template <class T>
ConvWgradProblem<T> wgrad_problem(const ConvShape& g, const float* x, int64_t ldx, const float* dy, int64_t lddy,
                                  float* out, int64_t split_stride, int64_t chunk, float beta) {
  ConvWgradProblem<T> p;
  p.g = g;
  p.x = x, p.dy = dy, p.out = out;
  p.ldx = ldx, p.lddy = lddy, p.split_stride = split_stride;
  p.kcols = g.kh * g.kw * g.c;
  p.p_total = g.n * g.oh * g.ow;
  p.chunk = static_cast<int>(chunk);
  p.ep.beta = beta;
  return p;
}
inline Extent wgrad_extent(const ConvShape& g, int64_t splits) { return {g.o, int64_t{g.kh} * g.kw * g.c, splits}; }

template <bool TransA, bool TransB, class T>
GemmProblem<TransA, TransB, T> gemm_problem(int m, int n, int k, const float* a, int64_t lda, const float* b,
                                            int64_t ldb, float* c, int64_t ldc, const Epilogue& ep) {
  GemmProblem<TransA, TransB, T> p;
  p.a = a, p.b = b, p.c = c;
  p.lda = lda, p.ldb = ldb, p.ldc = ldc;
  p.m = m, p.n = n, p.k = k;
  p.ep = ep;
  return p;
}

}  // namespace igemm
}  // namespace cuda
}  // namespace trick
