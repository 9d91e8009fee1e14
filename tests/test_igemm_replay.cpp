// Host replay of the tiled implicit-GEMM kernels (kernels/cuda/igemm.cuh), GPU or not.
//
// igemm_kernel (fp32) and igemm_tc_kernel (TF32 or bf16 tensor cores) take their index math
// from kernels/cuda/igemm.h, which is plain C++ on the host too. These tests run each
// kernel's exact schedule on host pointers: which thread stages which element, the
// shared-memory layout (NaN-poisoned before each stage), the 8x8 register tiles or the
// warps' mma fragments (against the PTX ISA's fragment tables, host_mma_tf32 and
// host_mma_bf16), the epilogue, and the split-K reduction; against the CPU convolution and
// GEMM (on inputs rounded to TF32 or bf16 for the tensor-core kernel), to the fp32 bound. A file of its own so that it
// compiles beside test_cuda.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cuda/igemm.h"
#include "kernels/gemm.h"
#include "tensor/error.h"
#include "tensor/random.h"
#include "tensor/tensor.h"
#include "tests/cuda_common.h"

namespace trick::test_igemm_replay {
namespace {

// Calls f(z, m0, n0, m_size) for every block of problem p's grid over extent e that has
// rows (the kernels' other blocks leave at once), after each simulated thread tid has set
// up its loaders la[tid] and lb[tid] for the block's k range [k0, k1).
template <class P, class F>
void for_each_block(const P& p, const cuda::igemm::Extent& e, std::vector<typename P::ALoader>& la,
                    std::vector<typename P::BLoader>& lb, int& k0, int& k1, F&& f) {
  using T = typename P::T;
  const int64_t gx = (e.m + T::BM - 1) / T::BM, gy = (e.n + T::BN - 1) / T::BN;
  for (int z = 0; z < e.z; ++z)
    for (int bx = 0; bx < gx; ++bx)
      for (int by = 0; by < gy; ++by) {
        const int m0 = bx * T::BM, n0 = by * T::BN;
        const int m_size = p.m_size(z);
        if (m0 >= m_size) continue;
        p.k_range(z, k0, k1);
        for (int tid = 0; tid < T::NT; ++tid) {
          p.init_a(la[tid], z, m0, k0, k1, tid);
          p.init_b(lb[tid], z, n0, k0, k1, tid);
        }
        f(z, m0, n0, m_size);
      }
}

// One kBK stage of thread (ty, tx) of igemm_kernel on the host: acc[i * tn + j] +=
// as[k][row(ty, i)] * bs[k][col(tx, j)] over k, with fmaf as the kernel, from the shared tiles
// (as: kBK rows of bm, bs: kBK rows of bn). Not a template: the replay of every tile and
// problem shares it (compile time).
void host_thread_stage(const float* as, int bm, const float* bs, int bn, int ty, int tx, int tn, int (*row)(int, int),
                       int (*col)(int, int), float* acc) {
  int rows[8], cols[8];
  for (int i = 0; i < 8; ++i) rows[i] = row(ty, i);
  for (int j = 0; j < tn; ++j) cols[j] = col(tx, j);
  for (int kk = 0; kk < cuda::igemm::kBK; ++kk)
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < tn; ++j)
        acc[i * tn + j] = std::fmaf(as[kk * bm + rows[i]], bs[kk * bn + cols[j]], acc[i * tn + j]);
}

// Runs problem p over extent e exactly as igemm_kernel schedules it: per block, each
// simulated thread initialises its loaders, stages its elements of every kBK slice into
// the shared tiles (poisoned with NaN first, so a slot no thread writes shows up), then
// accumulates its 8 x TN tile and writes it through the epilogue.
template <class P>
void replay(const P& p, const cuda::igemm::Extent& e) {
  using namespace cuda::igemm;
  using T = typename P::T;
  using AMap = typename P::AMap;
  using BMap = typename P::BMap;
  std::vector<typename P::ALoader> la(T::NT);
  std::vector<typename P::BLoader> lb(T::NT);
  std::vector<float> as(kBK * T::BM), bs(kBK * T::BN), acc(static_cast<size_t>(T::NT) * 8 * T::TN);
  int k0, k1;
  for_each_block(p, e, la, lb, k0, k1, [&](int z, int m0, int n0, int m_size) {
    std::fill(acc.begin(), acc.end(), 0.f);
    const int stages = k1 > k0 ? (k1 - k0 + kBK - 1) / kBK : 0;
    for (int t = 0; t < stages; ++t) {
      std::fill(as.begin(), as.end(), std::nanf(""));
      std::fill(bs.begin(), bs.end(), std::nanf(""));
      for (int tid = 0; tid < T::NT; ++tid) {
        if (t > 0) {
          p.next_a(la[tid]);
          p.next_b(lb[tid]);
        }
        float ra[AMap::S], rb[BMap::S];
        p.load_a(la[tid], ra);
        p.load_b(lb[tid], rb);
        for (int j = 0; j < AMap::S; ++j) as[AMap::kk(tid, j) * T::BM + AMap::row(tid, j)] = ra[j];
        for (int j = 0; j < BMap::S; ++j) bs[BMap::kk(tid, j) * T::BN + BMap::row(tid, j)] = rb[j];
      }
      for (int tid = 0; tid < T::NT; ++tid)
        host_thread_stage(as.data(), T::BM, bs.data(), T::BN, tid / T::TX, tid % T::TX, T::TN, &T::row, &T::col,
                          acc.data() + tid * 8 * T::TN);
    }
    const int n_size = p.n_size();
    for (int tid = 0; tid < T::NT; ++tid) {
      const int tx = tid % T::TX, ty = tid / T::TX;
      for (int i = 0; i < 8; ++i) {
        const int m = m0 + T::row(ty, i);
        if (m >= m_size) continue;
        float* row = p.row_ptr(z, m);
        for (int j = 0; j < T::TN; ++j) {
          const int n = n0 + T::col(tx, j);
          if (n < n_size) row[n] = p.ep.apply(acc[tid * 8 * T::TN + i * T::TN + j], n, row + n);
        }
      }
    }
  });
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 of one warp on the host, from the
// PTX ISA's fragment tables (written out here apart from igemm.h's TcTile, so that a wrong
// index in either shows): lane = 4 * g + t holds
//   A (16 x 8): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
//   B (8 x 8):  b0 (t, g), b1 (t + 4, g)
//   C (16 x 8): c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
// Tensor cores read only an operand's TF32 bits, so a kernel that forgot to round would
// show here as truncation.
void host_mma_tf32(float (&d)[32][4], const uint32_t (&a)[32][4], const uint32_t (&b)[32][2]) {
  auto tf32 = [](uint32_t u) {
    u &= 0xffffe000u;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return static_cast<double>(f);
  };
  double A[16][8], B[8][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    A[g][t] = tf32(a[lane][0]), A[g + 8][t] = tf32(a[lane][1]);
    A[g][t + 4] = tf32(a[lane][2]), A[g + 8][t + 4] = tf32(a[lane][3]);
    B[t][g] = tf32(b[lane][0]), B[t + 4][g] = tf32(b[lane][1]);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int r = 0; r < 4; ++r) {
      double s = d[lane][r];
      for (int k = 0; k < 8; ++k) s += A[rows[r]][k] * B[k][cols[r]];
      d[lane][r] = static_cast<float>(s);
    }
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 of one warp on the host, from the
// PTX ISA's fragment tables: each register holds two bf16, the lower-numbered element in
// the low 16 bits; lane = 4 * g + t holds
//   A (16 x 16): a0, a1 (g, 2t), (g, 2t + 1)    a2, a3 (g + 8, 2t), (g + 8, 2t + 1)
//                a4, a5 (g, 2t + 8), (g, 2t + 9)  a6, a7 (g + 8, 2t + 8), (g + 8, 2t + 9)
//   B (16 x 8):  b0, b1 (2t, g), (2t + 1, g)    b2, b3 (2t + 8, g), (2t + 9, g)
//   C (16 x 8):  as m16n8k8
void host_mma_bf16(float (&d)[32][4], const uint32_t (&a)[32][4], const uint32_t (&b)[32][2]) {
  auto bf16 = [](uint32_t reg, int half) {  // element `half` of a register, as a float
    const uint32_t u = (half ? reg >> 16 : reg & 0xffffu) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return static_cast<double>(f);
  };
  double A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int e = 0; e < 8; ++e) {  // a_e is half e % 2 of register e / 2
      const int row = g + ((e == 2 || e == 3 || e == 6 || e == 7) ? 8 : 0);
      const int k = 2 * t + (e % 2) + (e >= 4 ? 8 : 0);
      A[row][k] = bf16(a[lane][e / 2], e % 2);
    }
    for (int e = 0; e < 4; ++e) B[2 * t + (e % 2) + (e >= 2 ? 8 : 0)][g] = bf16(b[lane][e / 2], e % 2);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int r = 0; r < 4; ++r) {
      double s = d[lane][r];
      for (int k = 0; k < 16; ++k) s += A[rows[r]][k] * B[k][cols[r]];
      d[lane][r] = static_cast<float>(s);
    }
  }
}

// One fragment of every lane of a warp: A (m16 x k), B (k x n8), C (m16 x n8), k 8 (TF32)
// or 16 (bf16, two per register).
struct WarpA {
  uint32_t a[32][4];
};
struct WarpB {
  uint32_t b[32][2];
};
struct WarpAcc {
  float c[32][4];
};

// One k step of a warp on the host, as igemm_tc_kernel's inner loop: its lanes gather their
// fragments of rows wm0 + [0, 16 mf) and columns wn0 + [0, 8 nf) from the shared tiles of
// 32-bit words (as: rows of bm words, bs: rows of bn, from word row kw) through M's index
// functions (MmaTf32 or MmaBf16), and host_mma_tf32 or host_mma_bf16 multiplies them into
// acc[i * nf + j]. Not templated on the tile or problem: every replay shares it (it was
// most of this file's compile time).
template <class M>
void host_warp_step(const uint32_t* as, int bm, const uint32_t* bs, int bn, int kw, int wm0, int wn0, int mf, int nf,
                    WarpAcc* acc) {
  std::vector<WarpA> a(mf);
  std::vector<WarpB> b(nf);
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < mf; ++i)
      for (int r = 0; r < 4; ++r)
        a[i].a[lane][r] = as[(kw + M::a_word(lane, r)) * bm + wm0 + i * 16 + M::a_row(lane, r)];
    for (int j = 0; j < nf; ++j)
      for (int r = 0; r < 2; ++r) b[j].b[lane][r] = bs[(kw + M::b_word(lane, r)) * bn + wn0 + j * 8 + M::b_col(lane)];
  }
  for (int i = 0; i < mf; ++i)
    for (int j = 0; j < nf; ++j) {
      if constexpr (M::kPack == 1)
        host_mma_tf32(acc[i * nf + j].c, a[i].a, b[j].b);
      else
        host_mma_bf16(acc[i * nf + j].c, a[i].a, b[j].b);
    }
}

// Runs problem p over extent e exactly as igemm_tc_kernel<P, M> schedules it: per block,
// each simulated thread stages TcTile::KS slices of kBK per barrier into shared tiles
// poisoned with NaN (as a float and as both bf16 halves), rounded (stage, igemm.h); then each
// warp multiplies its fragments (host_warp_step) and writes its C fragments through the
// epilogue.
template <class M, class P>
void replay_tc(const P& p, const cuda::igemm::Extent& e) {
  using namespace cuda::igemm;
  using T = typename P::T;
  using L = TcTile<T>;
  using AMap = typename P::AMap;
  using BMap = typename P::BMap;
  constexpr int kWarps = T::NT / 32, kFrags = L::MF * L::NF, W = L::BK / M::kPack;
  constexpr uint32_t kPoison = 0x7fc07fc0u;
  std::vector<typename P::ALoader> la(T::NT);
  std::vector<typename P::BLoader> lb(T::NT);
  std::vector<uint32_t> as(W * T::BM), bs(W * T::BN);
  std::vector<WarpAcc> acc(kWarps * kFrags);
  int k0, k1;
  for_each_block(p, e, la, lb, k0, k1, [&](int z, int m0, int n0, int m_size) {
    std::fill(acc.begin(), acc.end(), WarpAcc{});
    const int stages = k1 > k0 ? (k1 - k0 + L::BK - 1) / L::BK : 0;
    for (int t = 0; t < stages; ++t) {
      std::fill(as.begin(), as.end(), kPoison);
      std::fill(bs.begin(), bs.end(), kPoison);
      for (int tid = 0; tid < T::NT; ++tid)
        for (int st = 0; st < L::KS; ++st) {
          if (t > 0 || st > 0) {
            p.next_a(la[tid]);
            p.next_b(lb[tid]);
          }
          float ra[AMap::S], rb[BMap::S];
          p.load_a(la[tid], ra);
          p.load_b(lb[tid], rb);
          for (int j = 0; j < AMap::S; ++j)
            stage<M>(as.data(), T::BM, st * kBK + AMap::kk(tid, j), AMap::row(tid, j), ra[j]);
          for (int j = 0; j < BMap::S; ++j)
            stage<M>(bs.data(), T::BN, st * kBK + BMap::kk(tid, j), BMap::row(tid, j), rb[j]);
        }
      for (int warp = 0; warp < kWarps; ++warp)
        for (int kw = 0; kw < W; kw += M::kK / M::kPack)
          host_warp_step<M>(as.data(), T::BM, bs.data(), T::BN, kw, L::warp_m0(warp), L::warp_n0(warp), L::MF, L::NF,
                            acc.data() + warp * kFrags);
    }
    const int n_size = p.n_size();
    for (int warp = 0; warp < kWarps; ++warp)
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < L::MF; ++i)
          for (int r = 0; r < 4; ++r) {
            const int m = m0 + L::warp_m0(warp) + i * 16 + M::c_row(lane, r);
            if (m >= m_size) continue;
            float* row = p.row_ptr(z, m);
            for (int j = 0; j < L::NF; ++j) {
              const int n = n0 + L::warp_n0(warp) + j * 8 + M::c_col(lane, r);
              if (n < n_size) row[n] = p.ep.apply(acc[warp * kFrags + i * L::NF + j].c[lane][r], n, row + n);
            }
          }
  });
}

// Which kernel a replay runs: igemm_kernel (fp32) or igemm_tc_kernel on TF32 or bf16.
enum class Kernel { Fp32, Tf32, Bf16 };

const char* kernel_label(Kernel k) { return k == Kernel::Tf32 ? " tf32" : k == Kernel::Bf16 ? " bf16" : ""; }

template <Kernel K, class P>
void replay_on(const P& p, const cuda::igemm::Extent& e) {
  if constexpr (K == Kernel::Tf32)
    replay_tc<cuda::igemm::MmaTf32>(p, e);
  else if constexpr (K == Kernel::Bf16)
    replay_tc<cuda::igemm::MmaBf16>(p, e);
  else
    replay(p, e);
}

// A copy of t with every element inside the view rounded as kernel k's products take it
// (TF32, bf16, or unchanged for fp32): the inputs for the CPU reference.
Tensor rounded_for(Kernel k, const Tensor& t) {
  if (k == Kernel::Fp32) return t;
  Tensor r = t.clone();
  for (int64_t i = 0; i < r.rows(); ++i)
    for (int64_t j = 0; j < r.cols(); ++j) {
      float& v = r.data()[i * r.ld() + j];
      v = k == Kernel::Tf32 ? cuda::igemm::round_tf32(v) : cuda::igemm::round_bf16(v);
    }
  return r;
}

// The split-K path of problem p (kernels/cuda/igemm.cuh, launch_split) on the host: the
// split decided for a 132-multiprocessor GPU under policy {warps_per_sm, min_k}, the
// SplitKProblem replayed into NaN-poisoned partials, then split_sum per output element.
// Returns the number of splits (1: p ran whole).
template <Kernel K = Kernel::Fp32, class P>
int64_t replay_split(const P& p, const cuda::igemm::Extent& e, int warps_per_sm, int min_k) {
  using namespace cuda::igemm;
  const int64_t count = p.out_rows() * p.n_size();
  const KSplit ks = k_split<typename P::T>(e, p.k_max(), count, 132, warps_per_sm, min_k);
  if (ks.splits == 1) {
    replay_on<K>(p, e);
    return 1;
  }
  std::vector<float> parts(static_cast<size_t>(ks.splits * count), std::nanf(""));
  replay_on<K>(split_k_problem(p, parts.data(), ks), split_extent(e, ks));
  for (int64_t r = 0; r < p.out_rows(); ++r)
    for (int n = 0; n < p.n_size(); ++n) {
      float* o = p.out() + r * p.out_ld() + n;
      *o = split_sum(parts.data() + r * p.n_size() + n, count, static_cast<int>(ks.splits), p.ep, n, o);
    }
  return ks.splits;
}

// Relative L2 distance over the elements of two equally shaped row-strided views;
// `nan_mismatch` counts places where exactly one side is NaN.
double rel_l2(const Tensor& got, const Tensor& want, int* nan_mismatch) {
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  double num = 0, den = 0;
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const bool gn = std::isnan(g[i]), wn = std::isnan(w[i]);
    if (gn || wn) {
      bad += gn != wn;
      continue;
    }
    num += (static_cast<double>(g[i]) - w[i]) * (static_cast<double>(g[i]) - w[i]);
    den += static_cast<double>(w[i]) * w[i];
  }
  if (nan_mismatch) *nan_mismatch = bad;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void expect_close_views(const std::string& what, const Tensor& got, const Tensor& want, double bound) {
  int nan_mismatch = 0;
  const double err = rel_l2(got, want, &nan_mismatch);
  INFO(what << ": relative L2 error " << err << ", NaN mismatches " << nan_mismatch);
  CHECK(nan_mismatch == 0);
  CHECK(err < bound);
}

cuda::igemm::ConvShape shape_of(const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p) {
  cuda::igemm::ConvShape g;
  g.n = static_cast<int>(x[0]), g.h = static_cast<int>(x[1]), g.w = static_cast<int>(x[2]),
  g.c = static_cast<int>(x[3]);
  g.oh = static_cast<int>(y[1]), g.ow = static_cast<int>(y[2]), g.o = static_cast<int>(y[3]);
  g.kh = static_cast<int>(w[1]), g.kw = static_cast<int>(w[2]);
  g.sh = p.stride_h, g.sw = p.stride_w, g.pt = p.pad_top, g.pl = p.pad_left;
  return g;
}

// A channel slice [2, 2 + c) of a wider random tensor, or a plain random tensor.
Tensor random_view(const Shape& s, Rng& rng, bool sliced) {
  if (!sliced) return randn(s, rng);
  Shape wide = s;
  wide.d[s.ndim - 1] += 5;
  return randn(wide, rng).slice_last(2, 2 + s[s.ndim - 1]);
}

// The reference for the tensor-core kernel multiplies the inputs rounded to TF32 or bf16
// (and adds the bias in fp32, as the epilogue does), so every kernel is held to the fp32
// bound.
template <class T, Kernel K = Kernel::Fp32>
void replay_conv_case(const ConvCase& cc, Rng& rng) {
  using namespace cuda::igemm;
  Conv2dParams p;
  p.stride_h = cc.sh, p.stride_w = cc.sw, p.pad_top = cc.pt, p.pad_bottom = cc.pb, p.pad_left = cc.pl,
  p.pad_right = cc.pr, p.relu = true;
  const Shape xs{cc.n, cc.h, cc.w, cc.c}, ws{cc.o, cc.kh, cc.kw, cc.c};
  const Shape ys = conv2d_output_shape(xs, ws, p);
  const ConvShape g = shape_of(xs, ws, ys, p);
  const std::string name = cat("conv ", xs.str(), " w ", ws.str(), " stride ", cc.sh, "x", cc.sw, " pads ", cc.pt,
                               cc.pb, cc.pl, cc.pr, " tile ", T::BM, "x", T::BN, kernel_label(K));
  Tensor x = random_view(xs, rng, cc.slice_x), w = randn(ws, rng), b = randn(Shape{cc.o}, rng);
  const Tensor xr = rounded_for(K, x), wr = rounded_for(K, w);  // what the kernel multiplies

  // forward with bias and ReLU into a (possibly sliced) output
  Tensor y_ref = random_view(ys, rng, cc.slice_y), y = random_view(ys, rng, cc.slice_y);
  y_ref.fill(std::nanf("")), y.fill(std::nanf(""));
  cpu::conv2d_forward(xr, wr, b, p, y_ref);
  replay_on<K>(forward_problem<T>(g, x.data(), x.ld(), w.data(), y.data(), y.ld(), b.data(), true), forward_extent(g));
  expect_close_views(name + " forward", y, y_ref, kFp32Bound);
  // split over k: every case is one block or a few, far below the target, so it splits
  // wherever k allows two ranges of min_k. Not on large tiles: the launchers pick those only
  // with a block per multiprocessor, which the default policy never splits (and the split
  // wrapper is the same for every tile; leaving them out halves this file's compile time).
  constexpr bool kSplits = !std::is_same_v<T, Large>;
  const int min_k = 8;
  if constexpr (kSplits) {
    Tensor ys_split = random_view(ys, rng, cc.slice_y);
    ys_split.fill(std::nanf(""));
    auto fp = forward_problem<T>(g, x.data(), x.ld(), w.data(), ys_split.data(), ys_split.ld(), b.data(), true);
    const int64_t fsplits = replay_split<K>(fp, forward_extent(g), 8, min_k);
    INFO("forward k " << fp.k_max() << ", splits " << fsplits);
    CHECK((fsplits > 1 || fp.k_max() < 2 * min_k));
    expect_close_views(name + " forward split over k", ys_split, y_ref, kFp32Bound);
  }

  // dgrad, write-only and accumulating
  Tensor dy = random_view(ys, rng, cc.slice_y);
  const Tensor dyr = rounded_for(K, dy);
  for (bool accumulate : {false, true}) {
    Tensor dx_ref = random_view(xs, rng, cc.slice_x);
    if (!accumulate) dx_ref.fill(std::nanf(""));
    Tensor dx = dx_ref.clone(), dx_split = dx_ref.clone();
    cpu::conv2d_dgrad(dyr, wr, p, dx_ref, accumulate);
    replay_on<K>(dgrad_problem<T>(g, dy.data(), dy.ld(), w.data(), dx.data(), dx.ld(), accumulate), dgrad_extent(g));
    expect_close_views(name + (accumulate ? " dgrad (accumulate)" : " dgrad"), dx, dx_ref, kFp32Bound);
    if constexpr (kSplits) {
      auto dp = dgrad_problem<T>(g, dy.data(), dy.ld(), w.data(), dx_split.data(), dx_split.ld(), accumulate);
      const int64_t dsplits = replay_split<K>(dp, dgrad_extent(g), 8, min_k);
      INFO("dgrad k " << dp.k_max() << ", splits " << dsplits);
      CHECK((dsplits > 1 || dp.k_max() < 2 * min_k));
      expect_close_views(name + (accumulate ? " dgrad split over k (accumulate)" : " dgrad split over k"), dx_split,
                         dx_ref, kFp32Bound);
    }
  }

  // wgrad, with the split count the launcher would pick on a 132-multiprocessor H100/H200
  // (on the tiles own_wgrad uses: large and small)
  if constexpr (!std::is_same_v<T, cuda::igemm::Narrow>)
    for (bool accumulate : {false, true}) {
      Tensor dw_ref = randn(ws, rng);
      if (!accumulate) dw_ref.fill(std::nanf(""));
      Tensor dw = dw_ref.clone(), no_db;
      cpu::conv2d_wgrad(xr, dyr, p, dw_ref, no_db, accumulate);
      const WgradSplit split = wgrad_split<T>(g, 132);
      const int64_t count = ws.numel();
      std::vector<float> parts(static_cast<size_t>(split.splits * count), std::nanf(""));
      if (split.splits == 1) {
        replay_on<K>(wgrad_problem<T>(g, x.data(), x.ld(), dy.data(), dy.ld(), dw.data(), 0, split.chunk,
                                      accumulate ? 1.f : 0.f),
                     wgrad_extent(g, 1));
      } else {
        replay_on<K>(wgrad_problem<T>(g, x.data(), x.ld(), dy.data(), dy.ld(), parts.data(), count, split.chunk, 0.f),
                     wgrad_extent(g, split.splits));
        for (int64_t i = 0; i < count; ++i) {  // the SplitSumF pass
          float s = accumulate ? dw.data()[i] : 0.f;
          for (int64_t z = 0; z < split.splits; ++z) s += parts[z * count + i];
          dw.data()[i] = s;
        }
      }
      INFO("wgrad splits " << split.splits << ", chunk " << split.chunk);
      expect_close_views(name + (accumulate ? " wgrad (accumulate)" : " wgrad"), dw, dw_ref, kFp32Bound);
    }
}

const std::vector<ConvCase>& replay_conv_cases() {
  static const std::vector<ConvCase> cases = {
      // n, h, w, c, o, kh, kw, sh, sw, pt, pb, pl, pr, slice_x, slice_y
      {2, 9, 11, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, true, true},     // 3x3 same, sliced in and out
      {2, 13, 12, 6, 9, 3, 3, 2, 2, 0, 0, 0, 0, false, true},   // stride 2, no padding (reduction block)
      {1, 10, 9, 4, 5, 3, 3, 2, 2, 1, 1, 1, 1, true, false},    // stride 2 with padding
      {2, 7, 9, 3, 6, 1, 7, 1, 1, 0, 0, 3, 3, false, false},    // 1x7
      {1, 9, 6, 5, 4, 7, 1, 1, 1, 3, 3, 0, 0, true, true},      // 7x1
      {2, 5, 6, 3, 4, 1, 3, 1, 1, 0, 0, 1, 1, false, false},    // 1x3
      {1, 6, 5, 3, 4, 3, 1, 1, 1, 1, 1, 0, 0, false, true},     // 3x1
      {2, 7, 8, 9, 10, 1, 1, 2, 2, 0, 0, 0, 0, true, false},    // 1x1 stride 2: phases without taps
      {1, 8, 7, 3, 5, 5, 5, 1, 1, 2, 1, 2, 0, false, false},    // 5x5, asymmetric padding
      {1, 11, 10, 2, 3, 3, 3, 3, 2, 1, 2, 0, 1, false, true},   // strides 3x2
      {2, 12, 12, 40, 72, 3, 3, 1, 1, 1, 1, 1, 1, true, true},  // several k stages and N tiles
  };
  return cases;
}

// x rounded to `bits` significand bits after the leading one (TF32: 10, bf16: 7) in
// double arithmetic: ties away from zero (std::round) or to even (std::nearbyint in the
// default rounding mode); below the normal range the quantum stays that of 2^-126, as in
// the formats' subnormals. The reference for round_tf32 and bf16_bits.
float reference_round(float x, int bits, bool ties_away) {
  if (!std::isfinite(x) || x == 0.f) return x;
  const int e = std::max(std::ilogb(x), -126);
  const double scaled = std::ldexp(static_cast<double>(x), bits - e);
  const double r = std::ldexp(ties_away ? std::round(scaled) : std::nearbyint(scaled), e - bits);
  if (std::fabs(r) > std::numeric_limits<float>::max()) return std::copysign(std::numeric_limits<float>::infinity(), x);
  return static_cast<float>(r);
}

TEST_CASE("cuda: the tensor cores' input rounding: TF32 ties away from zero, bf16 ties to even (host)") {
  using cuda::igemm::bf16_bits;
  using cuda::igemm::round_bf16;
  using cuda::igemm::round_tf32;
  auto same = [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; };
  // Ties: 1 + half a unit lies between 1 and 1 + one unit.
  CHECK(same(round_tf32(1.f + std::ldexp(1.f, -11)), 1.f + std::ldexp(1.f, -10)));  // away from zero
  CHECK(same(round_tf32(-1.f - std::ldexp(1.f, -11)), -1.f - std::ldexp(1.f, -10)));
  CHECK(same(round_bf16(1.f + std::ldexp(1.f, -8)), 1.f));                            // to even (down)
  CHECK(same(round_bf16(1.f + 3 * std::ldexp(1.f, -8)), 1.f + std::ldexp(1.f, -6)));  // to even (up)
  CHECK(same(round_bf16(-1.f - 3 * std::ldexp(1.f, -8)), -1.f - std::ldexp(1.f, -6)));
  CHECK(same(round_bf16(1.f + std::ldexp(1.f, -8) + std::ldexp(1.f, -20)), 1.f + std::ldexp(1.f, -7)));  // above
  CHECK(bf16_bits(1.f) == 0x3f80);
  CHECK(bf16_bits(-2.f) == 0xc000);
  CHECK(std::isinf(round_bf16(std::numeric_limits<float>::max())));  // rounds past the largest bf16
  CHECK(std::isinf(round_tf32(std::numeric_limits<float>::max())));
  CHECK(std::isinf(round_bf16(-std::numeric_limits<float>::infinity())));
  CHECK(std::isnan(round_bf16(std::nanf(""))));
  CHECK(std::isnan(round_tf32(std::nanf(""))));
  // A NaN whose payload is only in the low 16 bits must not become Inf.
  uint32_t low_nan_bits = 0x7f800001u;
  float low_nan;
  std::memcpy(&low_nan, &low_nan_bits, sizeof low_nan);
  CHECK(std::isnan(round_bf16(low_nan)));
  // Every exponent, subnormals included, from random bit patterns.
  Rng rng(31);
  int tf32_bad = 0, bf16_bad = 0, tried = 0;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = static_cast<uint32_t>(rng.next_u64());
    float x;
    std::memcpy(&x, &u, sizeof x);
    if (std::isnan(x)) continue;
    ++tried;
    tf32_bad += !same(round_tf32(x), reference_round(x, 10, true));
    bf16_bad += !same(round_bf16(x), reference_round(x, 7, false));
  }
  INFO(tried << " random floats");
  CHECK(tf32_bad == 0);
  CHECK(bf16_bad == 0);
}

TEST_CASE("cuda: the tiled kernel's schedule, replayed on the host, matches the CPU convolution") {
  Rng rng(21);
  for (const ConvCase& cc : replay_conv_cases()) {
    replay_conv_case<cuda::igemm::Large>(cc, rng);
    replay_conv_case<cuda::igemm::Small>(cc, rng);
    replay_conv_case<cuda::igemm::Narrow>(cc, rng);
  }
}

TEST_CASE("cuda: the TF32 tensor-core kernel's schedule, replayed on the host, matches the CPU convolution") {
  // Against the CPU on TF32-rounded inputs, to the fp32 bound: the kernel's fragment
  // indices (TcTile) against the PTX ISA's tables (host_mma_tf32), its staging of KS
  // slices per barrier and its rounding. On the large tiles (2 x 4 warps of 64 x 32: both
  // warp offsets) and the narrow ones (4 x 1 of 32 x 32, split over k too); the small
  // tiles' 1 x 2 warps of 64 x 32 add nothing but compile time.
  Rng rng(23);
  for (const ConvCase& cc : replay_conv_cases()) {
    replay_conv_case<cuda::igemm::Large, Kernel::Tf32>(cc, rng);
    replay_conv_case<cuda::igemm::Narrow, Kernel::Tf32>(cc, rng);
  }
}

TEST_CASE("cuda: the bf16 tensor-core kernel's schedule, replayed on the host, matches the CPU convolution") {
  // As for TF32, on bf16-rounded inputs: m16n8k16's fragments (two elements adjacent in k
  // per register, host_mma_bf16), the half-word staging and the rounding (ties to even).
  Rng rng(24);
  for (const ConvCase& cc : replay_conv_cases()) {
    replay_conv_case<cuda::igemm::Large, Kernel::Bf16>(cc, rng);
    replay_conv_case<cuda::igemm::Narrow, Kernel::Bf16>(cc, rng);
  }
}

template <bool TA, bool TB, class T, Kernel KN = Kernel::Fp32>
void replay_gemm_case(int M, int N, int K, float alpha, float beta, Rng& rng) {
  const int64_t lda = (TA ? M : K) + 3, ldb = (TB ? K : N) + 2, ldc = N + 1;
  Tensor a = randn(Shape{TA ? K : M, lda}, rng), b = randn(Shape{TB ? N : K, ldb}, rng);
  Tensor c_ref = randn(Shape{M, ldc}, rng);
  if (beta == 0.f) c_ref.fill(std::nanf(""));  // write-only
  const Tensor c_before = c_ref.clone();
  const Tensor ar = rounded_for(KN, a), br = rounded_for(KN, b);
  cpu::gemm(TA, TB, M, N, K, alpha, ar.data(), lda, br.data(), ldb, beta, c_ref.data(), ldc);
  cuda::igemm::Epilogue ep;
  ep.alpha = alpha, ep.beta = beta;
  const std::string name = cat("gemm ", TA ? "T" : "N", TB ? "T" : "N", " ", M, "x", N, "x", K, " tile ", T::BM, "x",
                               T::BN, kernel_label(KN));
  constexpr bool kSplits = !std::is_same_v<T, cuda::igemm::Large>;  // as in replay_conv_case
  for (int split = 0; split <= (kSplits ? 1 : 0); ++split) {
    Tensor c = c_before.clone();
    const auto problem = cuda::igemm::gemm_problem<TA, TB, T>(M, N, K, a.data(), lda, b.data(), ldb, c.data(), ldc, ep);
    const cuda::igemm::Extent e{M, N, 1};
    if constexpr (kSplits) {
      if (split) {
        const int64_t splits = replay_split<KN>(problem, e, 8, 8);
        INFO("splits " << splits);
        CHECK((splits > 1 || K < 16));
      }
    }
    if (!split) replay_on<KN>(problem, e);
    expect_close_views(name + (split ? " split over k" : ""), c.slice_last(0, N), c_ref.slice_last(0, N), kFp32Bound);
    // C's padding column (ldc = N + 1) is never written: it keeps its bits.
    int changed = 0;
    for (int i = 0; i < M; ++i)
      changed += std::memcmp(c.data() + i * ldc + N, c_ref.data() + i * ldc + N, sizeof(float)) != 0;
    CHECK(changed == 0);
  }
}

TEST_CASE("cuda: the tiled kernel's schedule, replayed on the host, matches the CPU GEMM") {
  Rng rng(5);
  for (auto [M, N, K] : {std::tuple<int, int, int>{1, 1, 1}, {7, 129, 33}, {130, 65, 9}, {64, 64, 64}, {3, 200, 0}}) {
    for (auto [alpha, beta] : {std::pair<float, float>{1.f, 0.f}, {0.5f, 0.25f}}) {
      replay_gemm_case<false, false, cuda::igemm::Large>(M, N, K, alpha, beta, rng);
      replay_gemm_case<false, true, cuda::igemm::Small>(M, N, K, alpha, beta, rng);
      replay_gemm_case<true, false, cuda::igemm::Large>(M, N, K, alpha, beta, rng);
      replay_gemm_case<true, true, cuda::igemm::Small>(M, N, K, alpha, beta, rng);
      replay_gemm_case<false, false, cuda::igemm::Narrow>(M, N, K, alpha, beta, rng);
      replay_gemm_case<false, true, cuda::igemm::Narrow>(M, N, K, alpha, beta, rng);
    }
  }
}

// The tensor-core kernel's GEMMs on kernel K, then against the unrounded fp32 product:
// its error must be the mode's (above the fp32 bound, below `bound`), proof that it
// rounds as it says.
template <Kernel KN>
void replay_tc_gemm_cases(Rng& rng, double bound) {
  for (auto [M, N, K] : {std::tuple<int, int, int>{1, 1, 1}, {7, 129, 33}, {130, 65, 9}, {64, 64, 64}, {3, 200, 0}}) {
    for (auto [alpha, beta] : {std::pair<float, float>{1.f, 0.f}, {0.5f, 0.25f}}) {
      replay_gemm_case<false, false, cuda::igemm::Large, KN>(M, N, K, alpha, beta, rng);
      replay_gemm_case<true, false, cuda::igemm::Narrow, KN>(M, N, K, alpha, beta, rng);
      replay_gemm_case<false, true, cuda::igemm::Narrow, KN>(M, N, K, alpha, beta, rng);
    }
  }
  const int M = 70, N = 50, K = 300;
  Tensor a = randn(Shape{M, K}, rng), b = randn(Shape{K, N}, rng), want = Tensor::zeros(Shape{M, N}),
         got = Tensor::zeros(Shape{M, N});
  cpu::gemm(false, false, M, N, K, 1.f, a.data(), K, b.data(), N, 0.f, want.data(), N);
  replay_on<KN>(cuda::igemm::gemm_problem<false, false, cuda::igemm::Large>(M, N, K, a.data(), K, b.data(), N,
                                                                            got.data(), N, cuda::igemm::Epilogue{}),
                cuda::igemm::Extent{M, N, 1});
  const double err = rel_l2(got, want, nullptr);
  INFO(std::string(kernel_label(KN)) << " replay against fp32: relative L2 error " << err);
  CHECK(err > 1e-5);
  CHECK(err < bound);
}

TEST_CASE("cuda: the TF32 tensor-core kernel's schedule, replayed on the host, matches the CPU GEMM") {
  Rng rng(6);
  replay_tc_gemm_cases<Kernel::Tf32>(rng, kTf32Bound);
}

TEST_CASE("cuda: the bf16 tensor-core kernel's schedule, replayed on the host, matches the CPU GEMM") {
  Rng rng(7);
  replay_tc_gemm_cases<Kernel::Bf16>(rng, kBf16Bound);
}

}  // namespace
}  // namespace trick::test_igemm_replay
