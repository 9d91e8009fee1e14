// A CUDA graph of the library's own work: captured once from ordinary calls, replayed as
// one launch (no per-kernel launch cost on the host, no allocation).
//
//   cuda::Graph g;
//   g.capture(Device::cuda(0), [&] { ...the same calls as an eager step... });
//   for (...) { g.replay(); g.sync(); ...read what the step wrote... }
//
// capture() runs `body` once with the library stream (cuda::stream()) set to the graph's
// own stream, under stream capture: kernels, cuBLAS/cuDNN calls, device copies and fills
// are recorded, not run. Allocations made meanwhile come from the graph's private pool
// (tensor/graph_pool.h), so the addresses the graph recorded stay its own until it is
// destroyed. The body must not read device memory on the host (Tensor::to_vector, item():
// they throw during a capture) and must not depend on values only the device knows; host
// data it copies to the device is frozen at its capture-time value. Kernel arguments
// (scalars such as a step size) are frozen too: capture again when they change.
//
// The graph's stream is a blocking stream: work on the legacy default stream (all eager
// library work and every cudaMemcpy) is ordered before and after each replay.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>

#include "tensor/tensor.h"

namespace trick {
namespace cuda {

class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(Graph&& o) noexcept;
  Graph& operator=(Graph&& o) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Captures `body` (see above) and instantiates it, replacing any graph held before.
  // If the body throws or the capture fails, throws trick::Error naming the cause and
  // leaves this object empty; nothing of the body ran on the device.
  void capture(Device device, const std::function<void()>& body);
  // Launches the graph on its stream (asynchronous to the host).
  void replay();
  // Waits for the last replay.
  void sync();
  // Destroys the graph and gives its memory back to the shared cache.
  void reset();

  bool ready() const { return exec_ != nullptr; }
  size_t nodes() const { return nodes_; }  // how many operations were captured
  cudaStream_t stream() const { return stream_; }

 private:
  void release() noexcept;
  Device device_;
  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  uint64_t pool_ = 0;
  size_t nodes_ = 0;
  bool holds_workspaces_ = false;  // workspace_hold() was called for this graph
};

}  // namespace cuda
}  // namespace trick
