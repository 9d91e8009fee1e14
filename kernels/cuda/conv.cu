// CUDA convolution, NHWC, on three interchangeable backends (kernels/backend.h):
//
//   Own     implicit GEMM on our tiled kernel (kernels/cuda/igemm.{h,cuh}), no im2col
//           buffer: forward with bias + ReLU in the epilogue, written straight into y's
//           rows (a channel slice works: rows are ld apart); dgrad split into stride
//           phases so a stride-2 layer multiplies no inserted zeros (with at most 4 input
//           channels, one thread per input pixel instead); wgrad as a split-K
//           GEMM over N*OH*OW whose partial products a second pass adds in a fixed order
//           (deterministic, no atomics). 1x1 stride-1 layers are plain GEMMs.
//   Cublas  cuBLAS SGEMM: 1x1 stride-1 layers directly; others through an explicit im2col
//           buffer (whole images per chunk, the buffer cached as a workspace) and, for
//           dgrad, a col2im gather.
//   Cudnn   cuDNN v9 (kernels/cuda/conv_cudnn.cpp); layers it cannot describe
//           (asymmetric padding, more than INT32_MAX elements) run on Own.
//
// Every path follows the CPU twin's semantics (kernels/cpu/conv.cpp): y is write-only;
// dx, dw and db are write-only unless `accumulate`.
#include <algorithm>

#include "kernels/backend.h"
#include "kernels/conv.h"
#include "kernels/cuda/blas.h"
#include "kernels/cuda/conv_cudnn.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/igemm.cuh"
#include "kernels/reduce.h"
#include "kernels/tensor_core_rounding.h"

namespace trick {
namespace cuda {

namespace {

using igemm::ConvShape;

// Checks that every size and product the kernels index with int fits, and builds the shape.
ConvShape conv_shape(const char* op, const Tensor& x, const Tensor& w, const Tensor& y, const Conv2dParams& p) {
  check_fits_int(op, "N*H*W", x.rows(), kMaxGemmDim);
  check_fits_int(op, "N*OH*OW", y.rows(), kMaxGemmDim);
  check_fits_int(op, "KH*KW*C", w.dim(1) * w.dim(2) * w.dim(3), kMaxGemmDim);
  check_fits_int(op, "KH*KW*O", w.dim(1) * w.dim(2) * w.dim(0), kMaxGemmDim);
  check_fits_int(op, "stride_h*stride_w", static_cast<int64_t>(p.stride_h) * p.stride_w, 65535);
  check_fits_int(op, "padding", std::max(p.pad_top, p.pad_left), 1 << 20);
  ConvShape g;
  g.n = static_cast<int>(x.dim(0)), g.h = static_cast<int>(x.dim(1)), g.w = static_cast<int>(x.dim(2));
  g.c = static_cast<int>(x.dim(3));
  g.oh = static_cast<int>(y.dim(1)), g.ow = static_cast<int>(y.dim(2)), g.o = static_cast<int>(y.dim(3));
  g.kh = static_cast<int>(w.dim(1)), g.kw = static_cast<int>(w.dim(2));
  g.sh = p.stride_h, g.sw = p.stride_w, g.pt = p.pad_top, g.pl = p.pad_left;
  return g;
}

// A 1x1 stride-1 unpadded layer: y(rows, O) = x(rows, C) * w(O, C)^T on the rows as they are.
bool pointwise(const ConvShape& g, const Conv2dParams& p) { return conv2d_pointwise(g.kh, g.kw, p); }

int64_t rows_in(const ConvShape& g) { return static_cast<int64_t>(g.n) * g.h * g.w; }
int64_t rows_out(const ConvShape& g) { return static_cast<int64_t>(g.n) * g.oh * g.ow; }
int64_t kcols(const ConvShape& g) { return static_cast<int64_t>(g.kh) * g.kw * g.c; }

// --- elementwise helpers ------------------------------------------------------------------

struct BiasReluF {
  RowView y;
  const float* bias;  // may be null
  bool relu;
  __device__ void operator()(uint32_t r, uint32_t c) const {
    float v = y.at(r, c);
    if (bias) v += bias[c];
    if (relu) v = v > 0.f ? v : 0.f;
    y.at(r, c) = v;
  }
};

void bias_relu(Tensor& y, const Tensor& b, bool relu) {
  if (!b.defined() && !relu) return;
  launch_map("conv2d", y.rows(), y.cols(), BiasReluF{view(y), b.defined() ? b.data() : nullptr, relu});
}

// col[r, (ky, kx, c)] = x[b, oy*sh - pt + ky, ox*sw - pl + kx, c] (0 outside) for output
// rows row0 + r, as kernels/cpu/conv.cpp's im2col.
struct Im2colF {
  ConstRowView x;
  float* col;
  ConvShape g;
  int64_t row0, kc;
  FastDiv ow, oh, c, kw;
  __device__ void operator()(uint32_t r, uint32_t k) const {
    uint32_t t, ox, b, oy, kt, ch, ky, kx;
    ow.divmod(static_cast<uint32_t>(row0 + r), t, ox);
    oh.divmod(t, b, oy);
    c.divmod(k, kt, ch);
    kw.divmod(kt, ky, kx);
    const int iy = static_cast<int>(oy) * g.sh - g.pt + static_cast<int>(ky);
    const int ix = static_cast<int>(ox) * g.sw - g.pl + static_cast<int>(kx);
    const bool in = static_cast<unsigned>(iy) < static_cast<unsigned>(g.h) &&
                    static_cast<unsigned>(ix) < static_cast<unsigned>(g.w);
    col[static_cast<int64_t>(r) * kc + k] = in ? x.at((static_cast<int64_t>(b) * g.h + iy) * g.w + ix, ch) : 0.f;
  }
};

// dx[pixel, c] (+)= sum of the col entries that im2col took from it, for the images
// [n0, n0 + count) whose col rows start at 0; a gather, so no two threads write one place.
struct Col2imF {
  const float* col;
  RowView dx;
  ConvShape g;
  int64_t pixel0, kc;
  FastDiv w, h;
  bool accumulate;
  __device__ void operator()(uint32_t r, uint32_t ch) const {
    const int64_t pixel = pixel0 + r;
    uint32_t t, ix, b, iy;
    w.divmod(static_cast<uint32_t>(pixel), t, ix);
    h.divmod(t, b, iy);
    const int64_t local_image = static_cast<int64_t>(b) - pixel0 / (static_cast<int64_t>(g.h) * g.w);
    float s = accumulate ? dx.at(pixel, ch) : 0.f;
    for (int ky = 0; ky < g.kh; ++ky) {
      const int ty = static_cast<int>(iy) + g.pt - ky;
      if (ty < 0 || ty % g.sh) continue;
      const int oy = ty / g.sh;
      if (oy >= g.oh) continue;
      for (int kx = 0; kx < g.kw; ++kx) {
        const int tx = static_cast<int>(ix) + g.pl - kx;
        if (tx < 0 || tx % g.sw) continue;
        const int ox = tx / g.sw;
        if (ox >= g.ow) continue;
        const int64_t crow = (local_image * g.oh + oy) * g.ow + ox;
        s += col[crow * kc + (ky * g.kw + kx) * g.c + ch];
      }
    }
    dx.at(pixel, ch) = s;
  }
};

struct SplitSumF {
  const float* parts;  // (splits, count)
  float* out;          // (count)
  int64_t count;
  int splits;
  bool accumulate;
  __device__ void operator()(uint32_t, uint32_t i) const {
    float s = accumulate ? out[i] : 0.f;
    for (int z = 0; z < splits; ++z) s += parts[z * count + i];
    out[i] = s;
  }
};

FastDiv divider(int64_t d) { return FastDiv(static_cast<uint32_t>(d > 0 ? d : 1)); }

// Whole images per im2col chunk: as many as fit in im2col_cap() floats (kernels/backend.h),
// at least one.
int64_t images_per_chunk(const ConvShape& g) {
  const int64_t per_image = static_cast<int64_t>(g.oh) * g.ow * kcols(g);
  return std::max<int64_t>(1, std::min<int64_t>(g.n, im2col_cap() / std::max<int64_t>(per_image, 1)));
}

float* im2col_chunk(const char* op, const Tensor& x, const ConvShape& g, int64_t n0, int64_t images) {
  const int64_t rows = images * g.oh * g.ow, kc = kcols(g);
  check_fits_int(op, "im2col buffer", rows * kc);
  float* col = workspace_as<float>(Workspace::Im2col, static_cast<size_t>(rows * kc));
  launch_map(
      op, rows, kc,
      Im2colF{cview(x), col, g, n0 * g.oh * g.ow, kc, divider(g.ow), divider(g.oh), divider(g.c), divider(g.kw)});
  return col;
}

// --- Own ----------------------------------------------------------------------------------

// dgrad of a layer with few input channels (the first layer: 3), where the tiled kernel
// would fill 3 of its 64 columns: one thread per input pixel keeps its C sums in
// registers and runs over the taps that reach it and all O, with the weights in shared
// memory as [ky][kx][o][c]. Deterministic; adds in (ky, kx, o) order.
// Up to kSmallCDgradMaxC channels and kSmallCDgradMaxWeights floats of w (32 KiB of shared
// memory), in fp32 in every math mode: the CPU's emulation of TF32 and bf16 does the same
// (kernels/tensor_core_rounding.h).
bool small_c_dgrad(const ConvShape& g, const Conv2dParams& p) {
  return ::trick::small_c_dgrad(g.c, static_cast<int64_t>(g.kh) * g.kw * g.o * g.c, pointwise(g, p));
}

template <int C, bool Wide>
__global__ void __launch_bounds__(256)
    dgrad_small_c_kernel(ConvShape g, const float* __restrict__ dy, int64_t lddy, const float* __restrict__ w,
                         float* dx, int64_t lddx, bool accumulate, uint32_t pixels, FastDiv fw, FastDiv fh) {
  extern __shared__ float ws[];
  const int taps = g.kh * g.kw, count = taps * g.o * C;
  for (int i = threadIdx.x; i < count; i += blockDim.x) {  // i = ((ky*kw + kx) * O + o) * C + c
    const int c = i % C, t = i / C, o = t % g.o, tap = t / g.o;
    ws[i] = w[(static_cast<int64_t>(o) * taps + tap) * C + c];
  }
  __syncthreads();
  const uint32_t step = gridDim.x * blockDim.x;
  for (uint32_t pixel = blockIdx.x * blockDim.x + threadIdx.x; pixel < pixels; pixel += step) {
    uint32_t t, ux, ub, uy;
    fw.divmod(pixel, t, ux);
    fh.divmod(t, ub, uy);
    const int iy = static_cast<int>(uy), ix = static_cast<int>(ux);
    float acc[C];
#pragma unroll
    for (int c = 0; c < C; ++c) acc[c] = 0.f;
    for (int ky = 0; ky < g.kh; ++ky) {
      const int ty = iy + g.pt - ky;
      if (ty < 0 || ty % g.sh) continue;
      const int oy = ty / g.sh;
      if (oy >= g.oh) continue;
      for (int kx = 0; kx < g.kw; ++kx) {
        const int tx = ix + g.pl - kx;
        if (tx < 0 || tx % g.sw) continue;
        const int ox = tx / g.sw;
        if (ox >= g.ow) continue;
        const float* d = dy + ((static_cast<int64_t>(ub) * g.oh + oy) * g.ow + ox) * lddy;
        const float* wt = ws + (ky * g.kw + kx) * g.o * C;
        if constexpr (Wide) {  // O, lddy multiples of 4 and dy 16-byte aligned: float4 reads
          for (int o = 0; o < g.o; o += 4) {
            const float4 d4 = *reinterpret_cast<const float4*>(d + o);
            const float v[4] = {d4.x, d4.y, d4.z, d4.w};
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
              for (int c = 0; c < C; ++c) acc[c] = fmaf(v[j], wt[(o + j) * C + c], acc[c]);
          }
        } else {
          for (int o = 0; o < g.o; ++o) {
            const float v = d[o];
#pragma unroll
            for (int c = 0; c < C; ++c) acc[c] = fmaf(v, wt[o * C + c], acc[c]);
          }
        }
      }
    }
    float* out = dx + static_cast<int64_t>(pixel) * lddx;
#pragma unroll
    for (int c = 0; c < C; ++c) out[c] = accumulate ? out[c] + acc[c] : acc[c];
  }
}

template <int C>
void launch_dgrad_small_c(const ConvShape& g, const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  const int64_t pixels = rows_in(g);
  check_fits_int("conv2d_dgrad", "N*H*W", pixels);
  constexpr int kThreads = 256;
  const size_t shared = static_cast<size_t>(g.kh) * g.kw * g.o * C * sizeof(float);
  const bool wide = g.o % 4 == 0 && dy.ld() % 4 == 0 && reinterpret_cast<uintptr_t>(dy.data()) % 16 == 0;
  auto kernel = wide ? dgrad_small_c_kernel<C, true> : dgrad_small_c_kernel<C, false>;
  kernel<<<grid_for(pixels, kThreads), kThreads, shared, stream()>>>(g, dy.data(), dy.ld(), w.data(), dx.data(),
                                                                     dx.ld(), accumulate, static_cast<uint32_t>(pixels),
                                                                     divider(g.w), divider(g.h));
  TRICK_CUDA_LAUNCHED(dgrad_small_c_kernel);
}

void dgrad_small_c(const ConvShape& g, const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  switch (g.c) {
    case 1: launch_dgrad_small_c<1>(g, dy, w, dx, accumulate); break;
    case 2: launch_dgrad_small_c<2>(g, dy, w, dx, accumulate); break;
    case 3: launch_dgrad_small_c<3>(g, dy, w, dx, accumulate); break;
    default: launch_dgrad_small_c<4>(g, dy, w, dx, accumulate); break;
  }
}

void own_forward(const ConvShape& g, const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                 Tensor& y) {
  const float* bias = b.defined() ? b.data() : nullptr;
  if (pointwise(g, p)) {
    gemm_own(false, true, rows_out(g), g.o, g.c, 1.f, x.data(), x.ld(), w.data(), g.c, 0.f, y.data(), y.ld(), bias,
             p.relu);
    return;
  }
  const igemm::Extent e = igemm::forward_extent(g);
  igemm::with_tile(e, [&](auto tile) {
    using T = decltype(tile);
    igemm::launch_split("conv2d",
                        igemm::forward_problem<T>(g, x.data(), x.ld(), w.data(), y.data(), y.ld(), bias, p.relu), e);
  });
}

void own_dgrad(const ConvShape& g, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx,
               bool accumulate) {
  if (pointwise(g, p)) {  // dx(rows, C) (+)= dy(rows, O) * w(O, C)
    gemm_own(false, false, rows_in(g), g.c, g.o, 1.f, dy.data(), dy.ld(), w.data(), g.c, accumulate ? 1.f : 0.f,
             dx.data(), dx.ld());
    return;
  }
  if (small_c_dgrad(g, p)) {
    dgrad_small_c(g, dy, w, dx, accumulate);
    return;
  }
  const igemm::Extent e = igemm::dgrad_extent(g);
  igemm::with_tile(e, [&](auto tile) {
    using T = decltype(tile);
    igemm::launch_split("conv2d_dgrad",
                        igemm::dgrad_problem<T>(g, dy.data(), dy.ld(), w.data(), dx.data(), dx.ld(), accumulate), e);
  });
}

template <class T>
void own_wgrad_tiles(const ConvShape& g, const Tensor& x, const Tensor& dy, Tensor& dw, bool accumulate) {
  const igemm::WgradSplit split = igemm::wgrad_split<T>(g, sm_count());
  const igemm::Extent e = igemm::wgrad_extent(g, split.splits);
  if (split.splits == 1) {
    igemm::launch(igemm::wgrad_problem<T>(g, x.data(), x.ld(), dy.data(), dy.ld(), dw.data(), 0, split.chunk,
                                          accumulate ? 1.f : 0.f),
                  e);
    return;
  }
  const int64_t count = e.m * e.n;  // O * KH*KW*C
  float* parts = workspace_as<float>(Workspace::SplitK, static_cast<size_t>(split.splits * count));
  igemm::launch(igemm::wgrad_problem<T>(g, x.data(), x.ld(), dy.data(), dy.ld(), parts, count, split.chunk, 0.f), e);
  launch_map("conv2d_wgrad", 1, count, SplitSumF{parts, dw.data(), count, static_cast<int>(split.splits), accumulate});
}

void own_wgrad(const ConvShape& g, const Tensor& x, const Tensor& dy, Tensor& dw, bool accumulate) {
  if (igemm::use_large_tiles(igemm::wgrad_extent(g, 1)))
    own_wgrad_tiles<igemm::Large>(g, x, dy, dw, accumulate);
  else
    own_wgrad_tiles<igemm::Small>(g, x, dy, dw, accumulate);
}

// --- Cublas -------------------------------------------------------------------------------

void cublas_forward(const ConvShape& g, const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  if (pointwise(g, p)) {
    gemm_cublas(false, true, rows_out(g), g.o, g.c, 1.f, x.data(), x.ld(), w.data(), g.c, 0.f, y.data(), y.ld());
    return;
  }
  const int64_t kc = kcols(g), step = images_per_chunk(g), per_image = static_cast<int64_t>(g.oh) * g.ow;
  for (int64_t n0 = 0; n0 < g.n; n0 += step) {
    const int64_t images = std::min<int64_t>(step, g.n - n0);
    const float* col = im2col_chunk("conv2d", x, g, n0, images);
    // y rows of these images (rows, O) = col (rows, K) * w (O, K)^T
    gemm_cublas(false, true, images * per_image, g.o, kc, 1.f, col, kc, w.data(), kc, 0.f,
                y.data() + n0 * per_image * y.ld(), y.ld());
  }
}

void cublas_dgrad(const ConvShape& g, const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx,
                  bool accumulate) {
  if (pointwise(g, p)) {
    gemm_cublas(false, false, rows_in(g), g.c, g.o, 1.f, dy.data(), dy.ld(), w.data(), g.c, accumulate ? 1.f : 0.f,
                dx.data(), dx.ld());
    return;
  }
  const int64_t kc = kcols(g), step = images_per_chunk(g), per_image = static_cast<int64_t>(g.oh) * g.ow;
  const int64_t in_per_image = static_cast<int64_t>(g.h) * g.w;
  for (int64_t n0 = 0; n0 < g.n; n0 += step) {
    const int64_t images = std::min<int64_t>(step, g.n - n0), rows = images * per_image;
    check_fits_int("conv2d_dgrad", "col buffer", rows * kc);
    float* col = workspace_as<float>(Workspace::Im2col, static_cast<size_t>(rows * kc));
    // dcol (rows, K) = dy rows (rows, O) * w (O, K)
    gemm_cublas(false, false, rows, kc, g.o, 1.f, dy.data() + n0 * per_image * dy.ld(), dy.ld(), w.data(), kc, 0.f, col,
                kc);
    launch_map("conv2d_dgrad", images * in_per_image, g.c,
               Col2imF{col, view(dx), g, n0 * in_per_image, kc, divider(g.w), divider(g.h), accumulate});
  }
}

void cublas_wgrad(const ConvShape& g, const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                  bool accumulate) {
  const int64_t kc = kcols(g);
  if (pointwise(g, p)) {  // dw (O, C) (+)= dy^T (O, rows) * x (rows, C)
    gemm_cublas(true, false, g.o, g.c, rows_out(g), 1.f, dy.data(), dy.ld(), x.data(), x.ld(), accumulate ? 1.f : 0.f,
                dw.data(), g.c);
    return;
  }
  const int64_t step = images_per_chunk(g), per_image = static_cast<int64_t>(g.oh) * g.ow;
  for (int64_t n0 = 0; n0 < g.n; n0 += step) {
    const int64_t images = std::min<int64_t>(step, g.n - n0);
    const float* col = im2col_chunk("conv2d_wgrad", x, g, n0, images);
    // dw (O, K) (+)= dy rows^T (O, rows) * col (rows, K)
    gemm_cublas(true, false, g.o, kc, images * per_image, 1.f, dy.data() + n0 * per_image * dy.ld(), dy.ld(), col, kc,
                (n0 == 0 && !accumulate) ? 0.f : 1.f, dw.data(), kc);
  }
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) {
  DeviceGuard guard(x.device());
  const ConvShape g = conv_shape("conv2d", x, w, y, p);
  if (rows_out(g) == 0 || g.o == 0) return;
  const ConvBackend backend = conv_backend();
  if (backend == ConvBackend::Cudnn && cudnn_conv_supported(x, y, p)) {
    cudnn_conv_forward(x, w, p, y);
    bias_relu(y, b, p.relu);
  } else if (backend == ConvBackend::Cublas) {
    cublas_forward(g, x, w, p, y);
    bias_relu(y, b, p.relu);
  } else {
    own_forward(g, x, w, b, p, y);
  }
}

void conv2d_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  DeviceGuard guard(dy.device());
  const ConvShape g = conv_shape("conv2d_dgrad", dx, w, dy, p);
  if (rows_in(g) == 0 || g.c == 0) return;
  if (g.o == 0) {  // no output channels: the gradient is zero
    if (!accumulate) scale_matrix(dx.rows(), dx.cols(), 0.f, dx.data(), dx.ld());
    return;
  }
  const ConvBackend backend = conv_backend();
  if (backend == ConvBackend::Cudnn && cudnn_conv_supported(dx, dy, p))
    cudnn_conv_dgrad(dy, w, p, dx, accumulate);
  else if (backend == ConvBackend::Cublas)
    cublas_dgrad(g, dy, w, p, dx, accumulate);
  else
    own_dgrad(g, dy, w, p, dx, accumulate);
}

void conv2d_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, Tensor& db, bool accumulate) {
  DeviceGuard guard(x.device());
  const ConvShape g = conv_shape("conv2d_wgrad", x, dw, dy, p);
  if (db.defined()) cuda::sum_rows(dy, db, accumulate);
  if (g.o == 0 || kcols(g) == 0) return;
  if (rows_out(g) == 0) {  // an empty batch: the gradient is zero
    if (!accumulate) scale_matrix(1, dw.numel(), 0.f, dw.data(), dw.numel());
    return;
  }
  const ConvBackend backend = conv_backend();
  if (backend == ConvBackend::Cudnn && cudnn_conv_supported(x, dy, p))
    cudnn_conv_wgrad(x, dy, p, dw, accumulate);
  else if (backend == ConvBackend::Cublas)
    cublas_wgrad(g, x, dy, p, dw, accumulate);
  else
    own_wgrad(g, x, dy, dw, accumulate);
}

}  // namespace cuda
}  // namespace trick
