// Prepared weights: the CPU engines' packed (and Winograd-transformed) copies of a layer's
// weights, kept across calls while the caller has promised the weights will not change
// (a FrozenConvWeights scope, kernels/conv.h, open on any thread).
//
// Every forward and data gradient packs its weights into the micro-kernel's panels (and the
// Winograd engines transform them, in double): at batch 1 that is about 8% of an attack step
// on Inception v3, repeated each step for weights that never change. Inside a scope the first
// call of each (weights, layout) builds the copy and the later ones reuse it. An entry holds
// a view of the weights, so their memory cannot be reused for other weights while it exists;
// all entries go when the last scope closes. The results are bit for bit those of packing per
// call: the same code fills the same buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "tensor/tensor.h"

namespace trick {
namespace cpu {

// The copy of w in `layout` (any integers that, with w's data pointer, say what was built:
// the caller's kind of copy and its parameters), `floats` floats long and 64-byte aligned,
// built by build(out) on its first use; null when no scope is open, the cache would grow
// past its limit (kPreparedLimitBytes) or the memory is not there, and the caller then
// prepares its own copy as before.
std::shared_ptr<const float> prepared_weights(const Tensor& w, const std::vector<int64_t>& layout, size_t floats,
                                              const std::function<void(float*)>& build);

constexpr size_t kPreparedLimitBytes = size_t{2} << 30;  // 2 GiB; Inception v3 needs ~0.3 GiB

struct PreparedStats {
  int64_t entries = 0, bytes = 0;  // held now
  int64_t builds = 0, hits = 0;    // since the process started
};
PreparedStats prepared_stats();

}  // namespace cpu
}  // namespace trick
