// Per-layer time and work of a step: what `trick bench --layers` prints.
//
// While a LayerProfiler is installed on a thread, each pass (begin_pass .. end_pass) is cut
// into layers:
//   - a LayerScope of kind Layer (ConvBnRelu, named modules) is one layer: everything run
//     inside it, whatever the ops, counts to it under the scope's name;
//   - an op outside any Layer scope (ProfileOp, at the top of every op in layers/) is a
//     layer of its own, named by the op, after the enclosing Prefix scope if there is one
//     ("Mixed_5b.avg_pool2d", "concat", "cross_entropy");
//   - the autograd nodes recorded inside a layer carry its index (Node::layer), and
//     Var::backward times each node's backward closure under that layer.
// Times are taken by a ProfileClock: the host's steady clock on the CPU (ops there return
// when their work is done), CUDA events on the library's stream on a GPU (eager execution
// only: a CUDA graph replays without the host seeing the layers). Work between layers
// (allocations, autograd's own bookkeeping) is in the pass's total but in no layer.
// Floating-point work is reported by the ops that do it (profile_flops: convolutions and
// linear layers, forward and each gradient they compute) and counted per pass.
//
// Installed nowhere (the default), every hook is one thread-local pointer test.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace trick {

// Points in time on a device's timeline, in the order the work was issued.
class ProfileClock {
 public:
  virtual ~ProfileClock() = default;
  virtual int mark() = 0;                         // after all work issued so far; returns its index
  virtual void resolve() = 0;                     // waits until every mark of the pass is reached
  virtual double ms(int from, int to) const = 0;  // between two marks (after resolve)
  virtual void clear() = 0;                       // a new pass: the marks start again at 0
};
std::unique_ptr<ProfileClock> make_host_clock();  // std::chrono::steady_clock
// The clock for work on `device`: the host's for the CPU; for a GPU, CUDA events recorded on
// the library's stream (cuda::stream()), so a layer's time is the GPU's between the work
// issued before it and after it.
std::unique_ptr<ProfileClock> make_profile_clock(Device device);

struct LayerTimes {
  std::string name;                     // "Mixed_5b.branch1x1", "maxpool1", "Mixed_5b.avg_pool2d"
  std::string ops;                      // the ops it ran, first-seen order: "conv2d" or "conv2d+batch_norm"
  std::string detail;                   // its first op's shapes: "3x3/2 299x299x3 -> 32" for a conv
  double fwd_flops = 0, bwd_flops = 0;  // floating-point operations of one pass
  std::vector<double> fwd_ms, bwd_ms;   // one entry per pass
};

class LayerProfiler {
 public:
  // Installs itself on this thread (one at a time).
  explicit LayerProfiler(std::unique_ptr<ProfileClock> clock);
  ~LayerProfiler();
  LayerProfiler(const LayerProfiler&) = delete;
  LayerProfiler& operator=(const LayerProfiler&) = delete;

  void begin_pass();
  // Waits for the pass's marks and records its times. Every pass must run the same layers
  // in the same order as the first (a step of a fixed model does); else this throws.
  void end_pass();

  const std::vector<LayerTimes>& layers() const { return layers_; }
  const std::vector<double>& pass_ms() const { return pass_ms_; }  // begin_pass to end_pass

  // --- hooks (LayerScope, ProfileOp, profile_flops, Var::backward) ---
  static LayerProfiler* active();
  int open_layer(const std::string& name, const char* op);  // starts a layer; returns its index
  void close_layer() noexcept;                              // ends the open layer
  void note_op(const char* op);                             // an op run inside the open layer
  int current() const { return current_; }                  // the open layer (forward), or -1
  void begin_backward(int layer);
  void end_backward();
  void add_flops(double flops);
  void set_detail(const std::string& detail);
  int scope_depth = 0;  // open Layer scopes and ops (only the outermost one marks)
  std::string prefix;   // of the innermost Prefix scope

 private:
  struct Interval {
    int layer, from, to;
    bool backward;
  };
  std::unique_ptr<ProfileClock> clock_;
  std::vector<LayerTimes> layers_;
  std::vector<double> pass_ms_;
  std::vector<Interval> intervals_;
  int passes_ = 0;
  int cursor_ = 0;  // the next layer's index in this pass
  int current_ = -1, current_from_ = -1;
  int backward_ = -1, backward_from_ = -1;
  int pass_from_ = -1;
  bool broken_ = false;  // a mark failed in a destructor: end_pass refuses the pass
  LayerProfiler* previous_ = nullptr;
};

// A named region of a forward pass. Layer: one layer of the profile (ConvBnRelu uses its
// name). Prefix: names the ops run directly inside it ("Mixed_5b" -> "Mixed_5b.concat").
// An empty name makes no scope.
class LayerScope {
 public:
  enum Kind { Layer, Prefix };
  explicit LayerScope(const std::string& name, Kind kind = Layer);
  ~LayerScope();
  LayerScope(const LayerScope&) = delete;
  LayerScope& operator=(const LayerScope&) = delete;

 private:
  LayerProfiler* p_;
  Kind kind_;
  bool marks_ = false;
  std::string saved_prefix_;
};

// At the top of every differentiable op: a layer of its own outside any Layer scope.
class ProfileOp {
 public:
  explicit ProfileOp(const char* op);
  ~ProfileOp();
  ProfileOp(const ProfileOp&) = delete;
  ProfileOp& operator=(const ProfileOp&) = delete;

 private:
  LayerProfiler* p_;
  bool marks_ = false;
};

// Adds floating-point work to the layer being run (forward, or the backward closure being
// timed). A no-op when no profiler is installed.
void profile_flops(double flops);
// True while a profiler is installed and in a pass: ops then describe their shapes with
// profile_detail (the first description of a layer is kept).
bool profiling();
void profile_detail(const std::string& detail);
// The layer index a node recorded now belongs to (-1: none, or no profiler).
int profile_current_layer();

}  // namespace trick
