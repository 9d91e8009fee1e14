#include "autograd/profile.h"

#include <chrono>

#include "tensor/error.h"

#ifdef TRICK_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace trick {

namespace {

thread_local LayerProfiler* g_installed = nullptr;  // installed on this thread
thread_local LayerProfiler* g_active = nullptr;     // installed and inside a pass

class HostClock : public ProfileClock {
 public:
  int mark() override {
    t_.push_back(std::chrono::steady_clock::now());
    return static_cast<int>(t_.size()) - 1;
  }
  void resolve() override {}
  double ms(int from, int to) const override {
    return std::chrono::duration<double, std::milli>(t_.at(to) - t_.at(from)).count();
  }
  void clear() override { t_.clear(); }

 private:
  std::vector<std::chrono::steady_clock::time_point> t_;
};

#ifdef TRICK_WITH_CUDA
class CudaClock : public ProfileClock {
 public:
  ~CudaClock() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  int mark() override {
    if (used_ == events_.size()) {
      cudaEvent_t e;
      TRICK_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    TRICK_CUDA_CHECK(cudaEventRecord(events_[used_], cuda::stream()));
    return static_cast<int>(used_++);
  }
  void resolve() override {
    if (used_ > 0) TRICK_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
  }
  double ms(int from, int to) const override {
    float t = 0;
    TRICK_CUDA_CHECK(
        cudaEventElapsedTime(&t, events_.at(static_cast<size_t>(from)), events_.at(static_cast<size_t>(to))));
    return t;
  }
  void clear() override { used_ = 0; }

 private:
  std::vector<cudaEvent_t> events_;
  size_t used_ = 0;
};
#endif

}  // namespace

std::unique_ptr<ProfileClock> make_host_clock() { return std::make_unique<HostClock>(); }

std::unique_ptr<ProfileClock> make_profile_clock(Device device) {
#ifdef TRICK_WITH_CUDA
  if (device.is_cuda()) {
    cuda::DeviceGuard guard(device);
    return std::make_unique<CudaClock>();
  }
#endif
  TRICK_CHECK(device.is_cpu(), "layer profile: no clock for ", device.str(), " in this build");
  return make_host_clock();
}

LayerProfiler::LayerProfiler(std::unique_ptr<ProfileClock> clock) : clock_(std::move(clock)) {
  TRICK_CHECK(clock_, "LayerProfiler: no clock");
  TRICK_CHECK(!g_installed, "LayerProfiler: another one is installed on this thread");
  g_installed = this;
}

LayerProfiler::~LayerProfiler() {
  if (g_active == this) g_active = nullptr;
  g_installed = nullptr;
}

LayerProfiler* LayerProfiler::active() { return g_active; }

void LayerProfiler::begin_pass() {
  clock_->clear();
  intervals_.clear();
  cursor_ = 0;
  current_ = backward_ = -1;
  scope_depth = 0;
  prefix.clear();
  for (LayerTimes& l : layers_) l.fwd_flops = l.bwd_flops = 0;
  broken_ = false;
  pass_from_ = clock_->mark();
  g_active = this;
}

void LayerProfiler::end_pass() {
  TRICK_CHECK(g_active == this, "LayerProfiler: end_pass without begin_pass");
  if (broken_) {
    g_active = nullptr;
    fail("layer profile: the clock failed during pass ", passes_ + 1);
  }
  const int to = clock_->mark();
  g_active = nullptr;
  clock_->resolve();
  TRICK_CHECK(passes_ == 0 || cursor_ == static_cast<int>(layers_.size()), "layer profile: pass ", passes_ + 1, " ran ",
              cursor_, " layers, the first ran ", layers_.size());
  for (LayerTimes& l : layers_) l.fwd_ms.push_back(0), l.bwd_ms.push_back(0);
  for (const Interval& i : intervals_) {
    LayerTimes& l = layers_[static_cast<size_t>(i.layer)];
    (i.backward ? l.bwd_ms : l.fwd_ms).back() += clock_->ms(i.from, i.to);
  }
  pass_ms_.push_back(clock_->ms(pass_from_, to));
  ++passes_;
}

int LayerProfiler::open_layer(const std::string& name, const char* op) {
  const int idx = cursor_++;
  if (passes_ == 0) {
    layers_.push_back(LayerTimes{name, op, "", 0, 0, {}, {}});
  } else {
    TRICK_CHECK(
        idx < static_cast<int>(layers_.size()) && layers_[static_cast<size_t>(idx)].name == name,
        "layer profile: pass ", passes_ + 1, " ran '", name, "' as layer ", idx + 1, " where the first ran '",
        idx < static_cast<int>(layers_.size()) ? layers_[static_cast<size_t>(idx)].name : std::string("nothing"), "'");
  }
  current_ = idx;
  current_from_ = clock_->mark();
  return idx;
}

void LayerProfiler::close_layer() noexcept {
  if (current_ < 0) return;
  // Called by destructors, also while an op's error unwinds: a clock that fails now (a CUDA
  // error) must not throw from there; the pass is then refused by end_pass.
  try {
    intervals_.push_back(Interval{current_, current_from_, clock_->mark(), false});
  } catch (...) {
    broken_ = true;
  }
  current_ = -1;
}

void LayerProfiler::note_op(const char* op) {
  if (current_ < 0 || passes_ > 0) return;
  std::string& ops = layers_[static_cast<size_t>(current_)].ops;
  // Whole names between '+': "conv2d" must not match inside "conv2d_x".
  const std::string padded = "+" + ops + "+";
  if (padded.find("+" + std::string(op) + "+") != std::string::npos) return;
  ops = ops.empty() ? std::string(op) : ops + "+" + op;
}

void LayerProfiler::begin_backward(int layer) {
  backward_ = layer >= 0 && layer < static_cast<int>(layers_.size()) ? layer : -1;
  if (backward_ >= 0) backward_from_ = clock_->mark();
}

void LayerProfiler::end_backward() {
  if (backward_ >= 0) intervals_.push_back(Interval{backward_, backward_from_, clock_->mark(), true});
  backward_ = -1;
}

void LayerProfiler::add_flops(double flops) {
  if (backward_ >= 0)
    layers_[static_cast<size_t>(backward_)].bwd_flops += flops;
  else if (current_ >= 0)
    layers_[static_cast<size_t>(current_)].fwd_flops += flops;
}

void LayerProfiler::set_detail(const std::string& detail) {
  if (current_ < 0 || passes_ > 0) return;
  std::string& d = layers_[static_cast<size_t>(current_)].detail;
  if (d.empty()) d = detail;
}

LayerScope::LayerScope(const std::string& name, Kind kind)
    : p_(name.empty() ? nullptr : LayerProfiler::active()), kind_(kind) {
  if (!p_) return;
  if (kind_ == Prefix) {
    saved_prefix_ = p_->prefix;
    p_->prefix = name;
    return;
  }
  if (p_->scope_depth++ == 0) {
    p_->open_layer(name, "");
    marks_ = true;
  }
}

LayerScope::~LayerScope() {
  if (!p_ || LayerProfiler::active() != p_) return;  // the pass ended (or failed) meanwhile
  if (kind_ == Prefix) {
    p_->prefix = saved_prefix_;
    return;
  }
  --p_->scope_depth;
  if (marks_) p_->close_layer();
}

ProfileOp::ProfileOp(const char* op) : p_(LayerProfiler::active()) {
  if (!p_) return;
  if (p_->scope_depth++ == 0) {
    p_->open_layer(p_->prefix.empty() ? std::string(op) : p_->prefix + "." + op, op);
    marks_ = true;
  } else {
    p_->note_op(op);
  }
}

ProfileOp::~ProfileOp() {
  if (!p_ || LayerProfiler::active() != p_) return;
  --p_->scope_depth;
  if (marks_) p_->close_layer();
}

void profile_flops(double flops) {
  if (LayerProfiler* p = LayerProfiler::active()) p->add_flops(flops);
}

bool profiling() { return LayerProfiler::active() != nullptr; }

void profile_detail(const std::string& detail) {
  if (LayerProfiler* p = LayerProfiler::active()) p->set_detail(detail);
}

int profile_current_layer() {
  const LayerProfiler* p = LayerProfiler::active();
  return p ? p->current() : -1;
}

}  // namespace trick
