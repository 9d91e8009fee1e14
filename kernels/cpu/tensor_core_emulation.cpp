#include "kernels/cpu/tensor_core_emulation.h"

#include <algorithm>
#include <memory>

#include "kernels/check.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/prepared.h"
#include "kernels/tensor_core_rounding.h"

namespace trick {
namespace cpu {

namespace {

constexpr int64_t kRoundedKind = 2;  // prepared_weights' kind of copy (0, 1: sgemm_conv.cpp, winograd.cpp)

void round_run(MathMode mode, const float* in, float* out, int64_t n) {
  if (mode == MathMode::TF32)
    for (int64_t i = 0; i < n; ++i) out[i] = round_tf32(in[i]);
  else
    for (int64_t i = 0; i < n; ++i) out[i] = round_bf16(in[i]);
}

}  // namespace

void tensor_core_round_matrix(MathMode mode, int64_t rows, int64_t cols, const float* in, int64_t ld, float* out) {
  TRICK_CHECK(mode != MathMode::FP32, "tensor_core_round_matrix: fp32 is not a rounding mode");
  parallel_range(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) round_run(mode, in + r * ld, out + r * cols, cols);
  });
}

Tensor tensor_core_rounded(const Tensor& x, MathMode mode) {
  TRICK_CHECK(x.device().is_cpu() && x.is_row_strided(), "tensor_core_rounded: a row-strided CPU tensor expected");
  Tensor out = Tensor::empty(x.shape());
  tensor_core_round_matrix(mode, x.rows(), x.cols(), x.data(), x.ld(), out.data());
  return out;
}

Tensor tensor_core_rounded_weights(const Tensor& w, MathMode mode) {
  TRICK_CHECK(w.device().is_cpu() && w.is_contiguous(), "tensor_core_rounded_weights: contiguous CPU weights expected");
  std::shared_ptr<const float> kept =
      prepared_weights(w, {kRoundedKind, static_cast<int64_t>(mode)}, static_cast<size_t>(w.numel()),
                       [&](float* out) { round_run(mode, w.data(), out, w.numel()); });
  if (!kept) return tensor_core_rounded(w, mode);
  // A view of the kept copy that keeps it alive; its address is stable while the scope lasts,
  // so the engines find their prepared copies of it by that address.
  float* data = const_cast<float*>(kept.get());
  return Tensor::wrap(w.shape(), data, std::const_pointer_cast<float>(std::move(kept)));
}

}  // namespace cpu
}  // namespace trick
