// One warp, one mma.sync: see kernels/cuda/mma_probe.h.
#include "kernels/cuda/igemm.cuh"
#include "kernels/cuda/mma_probe.h"
#include "kernels/cuda/runtime.h"

namespace trick {
namespace cuda {
namespace {

constexpr int kProbeM = 16, kProbeN = 8;

// As igemm_tc_kernel's inner step with one warp, one fragment of A and B, kw = 0: a and b
// are staged element by element (A as as[k][row], B as bs[k][column], as the loaders
// deliver them), the fragments read by the index functions, the product written by c_row
// and c_col.
template <class M>
__global__ void mma_probe_kernel(const float* a, const float* b, float* d) {
  constexpr int K = M::kK, W = K / M::kPack;
  __shared__ __align__(16) uint32_t as[W][kProbeM];
  __shared__ __align__(16) uint32_t bs[W][kProbeN];
  const int lane = threadIdx.x;
  for (int i = lane; i < kProbeM * K; i += 32) igemm::stage<M>(&as[0][0], kProbeM, i % K, i / K, a[i]);
  for (int i = lane; i < K * kProbeN; i += 32) igemm::stage<M>(&bs[0][0], kProbeN, i / kProbeN, i % kProbeN, b[i]);
  __syncwarp();
  uint32_t fa[4], fb[2];
  for (int r = 0; r < 4; ++r) fa[r] = as[M::a_word(lane, r)][M::a_row(lane, r)];
  for (int r = 0; r < 2; ++r) fb[r] = bs[M::b_word(lane, r)][M::b_col(lane)];
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  igemm::mma(M{}, acc, fa, fb);
  for (int r = 0; r < 4; ++r) d[M::c_row(lane, r) * kProbeN + M::c_col(lane, r)] = acc[r];
}

template <class M>
void run_probe(const float* a, const float* b, float* d) {
  constexpr int K = M::kK;
  const size_t na = kProbeM * K, nb = K * kProbeN, nd = kProbeM * kProbeN;
  DeviceBuffer buf((na + nb + nd) * sizeof(float));
  float* da = static_cast<float*>(buf.data());
  float* db = da + na;
  float* dd = db + nb;
  TRICK_CUDA_CHECK(cudaMemcpy(da, a, na * sizeof(float), cudaMemcpyHostToDevice));
  TRICK_CUDA_CHECK(cudaMemcpy(db, b, nb * sizeof(float), cudaMemcpyHostToDevice));
  TRICK_CUDA_CHECK(cudaMemset(dd, 0xff, nd * sizeof(float)));  // NaN: an element no lane wrote stays NaN
  mma_probe_kernel<M><<<1, 32, 0, stream()>>>(da, db, dd);
  TRICK_CUDA_LAUNCHED(mma_probe_kernel);
  TRICK_CUDA_CHECK(cudaMemcpy(d, dd, nd * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace

int mma_probe_k(MathMode mode) {
  switch (mode) {
    case MathMode::TF32: return igemm::MmaTf32::kK;
    case MathMode::BF16: return igemm::MmaBf16::kK;
    default: break;
  }
  throw Error(cat("mma_probe: no tensor-core product in math mode ", math_mode_name(mode)));
}

void mma_probe(MathMode mode, const float* a, const float* b, float* d) {
  mma_probe_k(mode);  // throws for FP32
  TRICK_CHECK(compute_capability() >= 80,
              "mma_probe: tensor cores need compute capability 8.0 or later (this GPU: ", compute_capability() / 10,
              ".", compute_capability() % 10, ")");
  if (mode == MathMode::TF32)
    run_probe<igemm::MmaTf32>(a, b, d);
  else
    run_probe<igemm::MmaBf16>(a, b, d);
}

}  // namespace cuda
}  // namespace trick
