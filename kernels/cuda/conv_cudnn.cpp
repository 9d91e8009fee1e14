// cuDNN convolutions (see kernels/cuda/conv_cudnn.h).
#include "kernels/cuda/conv_cudnn.h"

#ifndef TRICK_WITH_CUDNN
// Built without cuDNN's header (CMakeLists.txt): --conv cudnn stops at its first convolution
// with the loader's error, which says that this build has no cuDNN and what to do.
#include "kernels/cuda/lazy_libs.h"

namespace trick {
namespace cuda {
bool cudnn_conv_supported(const Tensor&, const Tensor&, const Conv2dParams&) {
  cudnn_library().require();  // throws
  return false;
}
void cudnn_conv_forward(const Tensor&, const Tensor&, const Conv2dParams&, Tensor&) { cudnn_library().require(); }
void cudnn_conv_dgrad(const Tensor&, const Tensor&, const Conv2dParams&, Tensor&, bool) { cudnn_library().require(); }
void cudnn_conv_wgrad(const Tensor&, const Tensor&, const Conv2dParams&, Tensor&, bool) { cudnn_library().require(); }
}  // namespace cuda
}  // namespace trick

#else

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "kernels/backend.h"
#include "kernels/cuda/handles.h"
#include "kernels/cuda/runtime.h"
#include "kernels/pointwise.h"

namespace trick {
namespace cuda {

namespace {

constexpr size_t kMaxWorkspace = size_t{1} << 30;

// A cuDNN descriptor owned by a move-only handle.
template <class T, cudnnStatus_t (*Create)(T*), cudnnStatus_t (*Destroy)(T)>
class Desc {
 public:
  Desc() { TRICK_CUDNN_CHECK(Create(&d_)); }
  ~Desc() {
    if (d_) Destroy(d_);
  }
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Desc& operator=(Desc&& o) noexcept {
    if (this != &o) {
      if (d_) Destroy(d_);
      d_ = std::exchange(o.d_, nullptr);
    }
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  T get() const { return d_; }

 private:
  T d_ = nullptr;
};
using TensorDesc = Desc<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc = Desc<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc =
    Desc<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor, cudnnDestroyConvolutionDescriptor>;

enum class Kind { Forward, Dgrad, Wgrad };

// The layer as cuDNN sees it; ldx / ldy are the row strides of the (N, H, W, C) and
// (N, OH, OW, O) tensors (C / O when packed).
struct Geometry {
  int n, h, w, c, oh, ow, o, kh, kw, sh, sw, ph, pw;
  int64_t ldx, ldy;
};

struct Plan {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  int algo = 0;  // a cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
  size_t workspace = 0;
};

using Key = std::array<int64_t, 19>;

Key key_of(Kind kind, const Geometry& g, MathMode mode) {
  const int64_t dev = current_device(), k = static_cast<int64_t>(kind), m = static_cast<int64_t>(mode);
  const int64_t choice = static_cast<int64_t>(cudnn_algo());
  return {dev, k, m, choice, g.n, g.h, g.w, g.c, g.oh, g.ow, g.o, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.ldx, g.ldy};
}

bool refused(cudnnStatus_t s) {
  const int category = CUDNN_STATUS_CATEGORY(static_cast<int>(s));
  return category == CUDNN_STATUS_NOT_SUPPORTED || category == CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t set_nhwc(const TensorDesc& d, int n, int c, int h, int w, int64_t ld) {
  // NHWC with rows (pixels) ld floats apart: strides (n, c, h, w) = (h*w*ld, 1, w*ld, ld)
  return cudnnSetTensor4dDescriptorEx(d.get(), CUDNN_DATA_FLOAT, n, c, h, w, static_cast<int>(h * w * ld), 1,
                                      static_cast<int>(w * ld), static_cast<int>(ld));
}

// In FP32 the descriptor stays CUDNN_FMA_MATH whatever an algorithm reports (cuDNN may
// list FMA-only algorithms as CUDNN_DEFAULT_MATH); tensor-op entries are skipped.
bool math_allowed(cudnnMathType_t t, MathMode mode) {
  return mode == MathMode::TF32 || t == CUDNN_FMA_MATH || t == CUDNN_DEFAULT_MATH;
}

// The plan for one layer, or null when cuDNN offers no algorithm for it (`why` says what
// the last refusal was).
std::unique_ptr<Plan> build_plan(Kind kind, const Geometry& g, MathMode mode, cudnnStatus_t& why) {
  auto plan = std::make_unique<Plan>();
  cudnnHandle_t h = cudnn();
#define TRICK_TRY(call)                              \
  do {                                               \
    why = (call);                                    \
    if (why != CUDNN_STATUS_SUCCESS) return nullptr; \
  } while (0)
  TRICK_TRY(set_nhwc(plan->x, g.n, g.c, g.h, g.w, g.ldx));
  TRICK_TRY(set_nhwc(plan->y, g.n, g.o, g.oh, g.ow, g.ldy));
  TRICK_TRY(cudnnSetFilter4dDescriptor(plan->w.get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, g.o, g.c, g.kh, g.kw));
  TRICK_TRY(cudnnSetConvolution2dDescriptor(plan->conv.get(), g.ph, g.pw, g.sh, g.sw, 1, 1, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
  // FP32 must not silently become TF32: cuDNN's default math allows TF32 on Ampere and later.
  TRICK_TRY(
      cudnnSetConvolutionMathType(plan->conv.get(), mode == MathMode::TF32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  int on = 0, oc = 0, ohh = 0, oww = 0;
  TRICK_TRY(
      cudnnGetConvolution2dForwardOutputDim(plan->conv.get(), plan->x.get(), plan->w.get(), &on, &oc, &ohh, &oww));
  if (on != g.n || oc != g.o || ohh != g.oh || oww != g.ow) {
    why = CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH;
    return nullptr;
  }
  // Take the first algorithm in cuDNN's list (fastest first when measured, else its
  // heuristic ranking) that succeeded, is deterministic, fits the math mode and needs at
  // most kMaxWorkspace; then ask for its exact workspace.
  auto pick = [&](auto* perf, int count, cudnnMathType_t& math) {
    for (int i = 0; i < count; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
          math_allowed(perf[i].mathType, mode) && perf[i].memory <= kMaxWorkspace) {
        math = perf[i].mathType;
        return static_cast<int>(perf[i].algo);
      }
    return -1;
  };
  // Measuring runs the candidates (allocating their buffers), so never inside a capture.
  const bool measure = cudnn_algo() == CudnnAlgo::Measure && !stream_capturing();
  // An error left by an earlier launch is reported (and cleared) as that, not cleared
  // silently with Find's below.
  if (measure) TRICK_CUDA_CHECK(cudaGetLastError());
  int algo = -1;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  // The measured list first; cuDNN's heuristic ranking when not measuring (a capture,
  // --cudnn-algo heuristic), when Find fails, or when nothing it measured is usable (every
  // candidate's allocation failed, or none is deterministic).
  auto choose = [&](auto* perf, int capacity, auto find, auto heuristic) {
    int count = 0;
    if (measure && find(capacity, &count, perf) == CUDNN_STATUS_SUCCESS) algo = pick(perf, count, math);
    if (measure) (void)cudaGetLastError();  // a candidate whose buffers did not fit leaves its failed
                                            // allocation as the last error: not a later kernel's failure
    if (algo >= 0) return CUDNN_STATUS_SUCCESS;
    count = 0;
    const cudnnStatus_t s = heuristic(capacity, &count, perf);
    if (s == CUDNN_STATUS_SUCCESS) algo = pick(perf, count, math);
    return s;
  };
  switch (kind) {
    case Kind::Forward: {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      TRICK_TRY(choose(
          perf, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
          [&](int cap, int* n, cudnnConvolutionFwdAlgoPerf_t* p) {
            return cudnnFindConvolutionForwardAlgorithm(h, plan->x.get(), plan->w.get(), plan->conv.get(),
                                                        plan->y.get(), cap, n, p);
          },
          [&](int cap, int* n, cudnnConvolutionFwdAlgoPerf_t* p) {
            return cudnnGetConvolutionForwardAlgorithm_v7(h, plan->x.get(), plan->w.get(), plan->conv.get(),
                                                          plan->y.get(), cap, n, p);
          }));
      break;
    }
    case Kind::Dgrad: {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      TRICK_TRY(choose(
          perf, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
          [&](int cap, int* n, cudnnConvolutionBwdDataAlgoPerf_t* p) {
            return cudnnFindConvolutionBackwardDataAlgorithm(h, plan->w.get(), plan->y.get(), plan->conv.get(),
                                                             plan->x.get(), cap, n, p);
          },
          [&](int cap, int* n, cudnnConvolutionBwdDataAlgoPerf_t* p) {
            return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, plan->w.get(), plan->y.get(), plan->conv.get(),
                                                               plan->x.get(), cap, n, p);
          }));
      break;
    }
    case Kind::Wgrad: {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      TRICK_TRY(choose(
          perf, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
          [&](int cap, int* n, cudnnConvolutionBwdFilterAlgoPerf_t* p) {
            return cudnnFindConvolutionBackwardFilterAlgorithm(h, plan->x.get(), plan->y.get(), plan->conv.get(),
                                                               plan->w.get(), cap, n, p);
          },
          [&](int cap, int* n, cudnnConvolutionBwdFilterAlgoPerf_t* p) {
            return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, plan->x.get(), plan->y.get(), plan->conv.get(),
                                                                 plan->w.get(), cap, n, p);
          }));
      break;
    }
  }
  if (algo < 0) {
    why = CUDNN_STATUS_NOT_SUPPORTED;
    return nullptr;
  }
  if (mode == MathMode::TF32) TRICK_TRY(cudnnSetConvolutionMathType(plan->conv.get(), math));
  plan->algo = algo;
  switch (kind) {
    case Kind::Forward:
      TRICK_TRY(cudnnGetConvolutionForwardWorkspaceSize(h, plan->x.get(), plan->w.get(), plan->conv.get(),
                                                        plan->y.get(), static_cast<cudnnConvolutionFwdAlgo_t>(algo),
                                                        &plan->workspace));
      break;
    case Kind::Dgrad:
      TRICK_TRY(cudnnGetConvolutionBackwardDataWorkspaceSize(
          h, plan->w.get(), plan->y.get(), plan->conv.get(), plan->x.get(),
          static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), &plan->workspace));
      break;
    case Kind::Wgrad:
      TRICK_TRY(cudnnGetConvolutionBackwardFilterWorkspaceSize(
          h, plan->x.get(), plan->y.get(), plan->conv.get(), plan->w.get(),
          static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), &plan->workspace));
      break;
  }
#undef TRICK_TRY
  return plan;
}

// Plans by layer; a null entry remembers that cuDNN refused the layer in that layout.
class PlanCache {
 public:
  Plan* get(Kind kind, const Geometry& g, MathMode mode, cudnnStatus_t& why) {
    const Key key = key_of(kind, g, mode);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      why = CUDNN_STATUS_SUCCESS;
      it = plans_.emplace(key, build_plan(kind, g, mode, why)).first;
      if (!it->second) why_[key] = why;
    } else if (!it->second) {
      why = why_[key];
    }
    return it->second.get();
  }
  void refuse(Kind kind, const Geometry& g, MathMode mode, cudnnStatus_t why) {
    const Key key = key_of(kind, g, mode);
    std::lock_guard<std::mutex> lock(mu_);
    plans_[key].reset();
    why_[key] = why;
  }

 private:
  std::mutex mu_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  std::map<Key, cudnnStatus_t> why_;
};

PlanCache& plans() {
  static auto* cache = new PlanCache();  // never destroyed: outlives the CUDA runtime at exit
  return *cache;
}

// Operands of one call; x_side is (N, H, W, C), y_side (N, OH, OW, O).
struct Operands {
  const float* x = nullptr;
  float* x_out = nullptr;  // dgrad writes the x side
  const float* w = nullptr;
  float* w_out = nullptr;  // wgrad writes the filter
  const float* y = nullptr;
  float* y_out = nullptr;  // forward writes the y side
  float beta = 0.f;
};

cudnnStatus_t run(Kind kind, const Plan& plan, const Operands& ops) {
  void* ws = plan.workspace ? workspace(Workspace::Cudnn, plan.workspace) : nullptr;
  const float alpha = 1.f;
  cudnnHandle_t h = cudnn();
  switch (kind) {
    case Kind::Forward:
      return cudnnConvolutionForward(h, &alpha, plan.x.get(), ops.x, plan.w.get(), ops.w, plan.conv.get(),
                                     static_cast<cudnnConvolutionFwdAlgo_t>(plan.algo), ws, plan.workspace, &ops.beta,
                                     plan.y.get(), ops.y_out);
    case Kind::Dgrad:
      return cudnnConvolutionBackwardData(h, &alpha, plan.w.get(), ops.w, plan.y.get(), ops.y, plan.conv.get(),
                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(plan.algo), ws, plan.workspace,
                                          &ops.beta, plan.x.get(), ops.x_out);
    case Kind::Wgrad:
      return cudnnConvolutionBackwardFilter(h, &alpha, plan.x.get(), ops.x, plan.y.get(), ops.y, plan.conv.get(),
                                            static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan.algo), ws, plan.workspace,
                                            &ops.beta, plan.w.get(), ops.w_out);
  }
  return CUDNN_STATUS_BAD_PARAM;
}

Geometry geometry(const char* op, const Tensor& xs, const Tensor& w, const Tensor& ys, const Conv2dParams& p) {
  // cuDNN takes int sizes and strides.
  check_fits_int(op, "input elements", xs.dim(0) * xs.dim(1) * xs.dim(2) * xs.ld());
  check_fits_int(op, "output elements", ys.dim(0) * ys.dim(1) * ys.dim(2) * ys.ld());
  Geometry g;
  g.n = static_cast<int>(xs.dim(0)), g.h = static_cast<int>(xs.dim(1)), g.w = static_cast<int>(xs.dim(2));
  g.c = static_cast<int>(xs.dim(3));
  g.oh = static_cast<int>(ys.dim(1)), g.ow = static_cast<int>(ys.dim(2)), g.o = static_cast<int>(ys.dim(3));
  g.kh = static_cast<int>(w.dim(1)), g.kw = static_cast<int>(w.dim(2));
  g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_top, g.pw = p.pad_left;
  g.ldx = xs.ld(), g.ldy = ys.ld();
  return g;
}

std::string describe(const Geometry& g) {
  return cat("x (", g.n, ", ", g.h, ", ", g.w, ", ", g.c, ") ld ", g.ldx, ", w ", g.kh, "x", g.kw, " stride ", g.sh,
             "x", g.sw, " pad ", g.ph, "x", g.pw, ", y (", g.n, ", ", g.oh, ", ", g.ow, ", ", g.o, ") ld ", g.ldy);
}

Tensor packed_copy(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.device());
  cuda::copy(t, c);
  return c;
}

// cuDNN's kernels may load 16 bytes at a time, and an algorithm is chosen (measured on
// cuDNN's own, aligned buffers) and cached per shape, not per address; a view that starts
// inside a row (a channel slice at channel 2, say) may be only 4-byte aligned. Such
// operands are never handed to cuDNN: they go through aligned packed copies (our own
// allocations are 512-byte aligned). Inception's branch slices start at multiples of 4
// channels and run in place.
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Runs `kind` on the tensors in place when cuDNN takes their strides, else through packed
// copies of the strided or misaligned ones. x_side / y_side are the (N, H, W, C) / (N, OH,
// OW, O) tensors; `out` says which of them (or the filter) is written, `beta` how.
void convolve(const char* op, Kind kind, const Tensor& x_side, const Tensor& w, const Tensor& y_side,
              const Conv2dParams& p, float beta) {
  const MathMode mode = math_mode();
  // cuDNN's tensor-op math on fp32 tensors is TF32; it has no bf16 one (that needs bf16 tensors).
  TRICK_CHECK(mode != MathMode::BF16, "cudnn: ", op,
              ": no bf16 math on fp32 tensors; use --bf16 with --conv own or cublas, or --tf32 with cudnn");
  const Geometry g = geometry(op, x_side, w, y_side, p);
  const bool strided = g.ldx != g.c || g.ldy != g.o;
  const bool aligned = aligned16(x_side.data()) && aligned16(y_side.data()) && aligned16(w.data());
  auto operands = [&](const Tensor& xs, const Tensor& ws, const Tensor& ys) {
    Operands o;
    o.x = xs.data(), o.y = ys.data(), o.w = ws.data(), o.beta = beta;
    if (kind == Kind::Forward) o.y_out = ys.data();
    if (kind == Kind::Dgrad) o.x_out = xs.data();
    if (kind == Kind::Wgrad) o.w_out = ws.data();
    return o;
  };
  cudnnStatus_t why = CUDNN_STATUS_SUCCESS;
  if (aligned) {
    if (Plan* plan = plans().get(kind, g, mode, why)) {
      why = run(kind, *plan, operands(x_side, w, y_side));
      if (why == CUDNN_STATUS_SUCCESS) return;
      if (!strided || !refused(why)) check_cudnn(why, op, __FILE__, __LINE__);
      plans().refuse(kind, g, mode, why);  // strided layout refused at run time: go packed from now on
    }
    if (!strided || !refused(why))
      fail("cudnn: ", op, ": no algorithm for ", describe(g), ": ", cudnnGetErrorString(why));
  }

  Geometry gp = g;
  gp.ldx = g.c, gp.ldy = g.o;
  Plan* plan = plans().get(kind, gp, mode, why);
  TRICK_CHECK(plan, "cudnn: ", op, ": no algorithm for ", describe(gp), ": ", cudnnGetErrorString(why));
  // Inputs are copied in; a written operand that is copied is a fresh packed tensor copied
  // back after (and copied in first when the call accumulates into it).
  const bool x_written = kind == Kind::Dgrad, y_written = kind == Kind::Forward, w_written = kind == Kind::Wgrad;
  const bool x_copy = g.ldx != g.c || !aligned16(x_side.data()), y_copy = g.ldy != g.o || !aligned16(y_side.data());
  const bool w_copy = !aligned16(w.data());
  auto side = [&](const Tensor& t, bool copy, bool written) {
    if (!copy) return t;
    return written && beta == 0.f ? Tensor::empty(t.shape(), t.device()) : packed_copy(t);
  };
  Tensor xs = side(x_side, x_copy, x_written), ys = side(y_side, y_copy, y_written), ws = side(w, w_copy, w_written);
  check_cudnn(run(kind, *plan, operands(xs, ws, ys)), op, __FILE__, __LINE__);
  auto copy_back = [](const Tensor& from, const Tensor& to) {
    Tensor dst = to;
    cuda::copy(from, dst);
  };
  if (x_written && x_copy) copy_back(xs, x_side);
  if (y_written && y_copy) copy_back(ys, y_side);
  if (w_written && w_copy) copy_back(ws, w);
}

}  // namespace

bool cudnn_conv_supported(const Tensor& x_side, const Tensor& y_side, const Conv2dParams& p) {
  auto fits_int = [](const Tensor& t) { return t.dim(0) * t.dim(1) * t.dim(2) * t.ld() <= INT32_MAX; };
  return p.pad_top == p.pad_bottom && p.pad_left == p.pad_right && fits_int(x_side) && fits_int(y_side);
}

void cudnn_conv_forward(const Tensor& x, const Tensor& w, const Conv2dParams& p, Tensor& y) {
  convolve("conv2d", Kind::Forward, x, w, y, p, 0.f);
}

void cudnn_conv_dgrad(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx, bool accumulate) {
  convolve("conv2d_dgrad", Kind::Dgrad, dx, w, dy, p, accumulate ? 1.f : 0.f);
}

void cudnn_conv_wgrad(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw, bool accumulate) {
  convolve("conv2d_wgrad", Kind::Wgrad, x, dw, dy, p, accumulate ? 1.f : 0.f);
}

}  // namespace cuda
}  // namespace trick

#endif  // TRICK_WITH_CUDNN
