// The register-blocked sgemm micro-kernel behind the CPU convolutions (kernels/cpu/sgemm_conv.cpp).
//
// It computes one kMr x kNr tile of C = A * B, where
//   A: kMr rows given as pointers, K split into segments (one per convolution tap, or a piece
//      of one): segment s contributes len_s columns, read from seg[s].a[r][0 .. len_s) for row r
//      (rows of a padded tap point at zeros). The rows are read in place, never packed: for an
//      NHWC convolution a row segment is one input pixel's channels, so this is implicit im2col.
//   B: packed, kNr floats per k; segment s reads rows [boff_s / kNr, boff_s / kNr + len_s) of it
//      (a segment of all-padding rows is left out by the caller, with its B rows).
//   C: kMr row pointers, columns [0, cols) written (cols <= kNr, rows <= kMr).
// Accumulators stay in registers over all segments; the store adds the old C (kLoadC), the
// bias and the ReLU (kEpilogue) in the same pass.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace trick {
namespace cpu {
namespace sgemm {

constexpr int kMr = 6;   // rows of C per tile: 6 broadcasts
constexpr int kNr = 16;  // columns of C per tile: two 8-float AVX registers; 12 accumulators

struct Segment {
  const float* a[kMr];  // row r's first element of this stretch of K
  int64_t len;          // how many k
  int64_t boff;         // where its B rows start: floats from the kernel's b
};

enum KernelFlags : int {
  kLoadC = 1,     // C += A * B (else C = A * B; old C never read, NaN included)
  kEpilogue = 2,  // then + bias[0, cols) if bias, then max(0, .) if kRelu
  kRelu = 4,
};

// True when this CPU runs the AVX2 + FMA kernel (checked once, at run time).
bool kernel_supported();

// One tile. b: the packed panel (16-float aligned rows), crow[r] + col0: row r of the C tile.
void kernel_6x16(const Segment* seg, int nseg, const float* b, float* const* crow, int64_t col0, int rows, int cols,
                 int flags, const float* bias);

// Packing of B panels (kNr floats per k, zero past `cols`), the AVX2 versions of plain loops:
// out[k * kNr + q] = rows[q][k] for k < n, q < cols: a transpose (forward convolution weights,
// one row per output channel; rows[q] for q >= cols is ignored).
void pack_b_transpose(const float* const* rows, int cols, int64_t n, float* out);
// One row of weights dealt to consecutive panels (dgrad): for p < npanels, out[p * out_stride + q]
// = src[p * kNr + q], q < kNr, except the last panel: q < last_cols, zeros after.
void pack_b_deal(const float* src, int64_t npanels, int last_cols, float* out, int64_t out_stride);

// Room for `floats` floats from the first 64-byte boundary in v (grown, never shrunk, with
// 16 floats of slack for the rounding): where packed panels and tiles are kept.
inline float* aligned_floats(std::vector<float>& v, size_t floats) {
  if (v.size() < floats + 16) v.resize(floats + 16);
  const uintptr_t a = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((a + 63) & ~uintptr_t{63});
}

}  // namespace sgemm
}  // namespace cpu
}  // namespace trick
