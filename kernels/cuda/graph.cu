// CUDA graphs of the library's work (see kernels/cuda/graph.h).
#include "kernels/cuda/graph.h"

#include <exception>
#include <string>
#include <utility>

#include "kernels/cuda/runtime.h"
#include "tensor/graph_pool.h"

namespace trick {
namespace cuda {

Graph::~Graph() { release(); }

Graph::Graph(Graph&& o) noexcept
    : device_(o.device_),
      stream_(std::exchange(o.stream_, nullptr)),
      graph_(std::exchange(o.graph_, nullptr)),
      exec_(std::exchange(o.exec_, nullptr)),
      pool_(std::exchange(o.pool_, 0)),
      nodes_(std::exchange(o.nodes_, 0)),
      holds_workspaces_(std::exchange(o.holds_workspaces_, false)) {}

Graph& Graph::operator=(Graph&& o) noexcept {
  if (this != &o) {
    release();
    device_ = o.device_;
    stream_ = std::exchange(o.stream_, nullptr);
    graph_ = std::exchange(o.graph_, nullptr);
    exec_ = std::exchange(o.exec_, nullptr);
    pool_ = std::exchange(o.pool_, 0);
    nodes_ = std::exchange(o.nodes_, 0);
    holds_workspaces_ = std::exchange(o.holds_workspaces_, false);
  }
  return *this;
}

void Graph::release() noexcept {
  // No replay may still run when its memory goes back to the shared cache.
  if (stream_) cudaStreamSynchronize(stream_);
  if (exec_) cudaGraphExecDestroy(exec_);
  if (graph_) cudaGraphDestroy(graph_);
  exec_ = nullptr;
  graph_ = nullptr;
  nodes_ = 0;
  if (pool_) {
    try {
      release_capture_pool(pool_);
    } catch (...) {  // only thrown for the pool of a capture in progress, which this is not
    }
    pool_ = 0;
  }
  if (stream_) cudaStreamDestroy(stream_);
  stream_ = nullptr;
  if (holds_workspaces_) workspace_release();  // after the sync above: no replay runs any more
  holds_workspaces_ = false;
}

void Graph::reset() { release(); }

void Graph::capture(Device device, const std::function<void()>& body) {
  release();
  DeviceGuard guard(device);
  TRICK_CHECK(!stream_capturing(), "cuda graph: the library stream is already being captured; captures cannot nest");
  device_ = device;
  TRICK_CUDA_CHECK(cudaStreamCreate(&stream_));  // blocking: ordered against the legacy stream
  workspace_hold();  // the workspaces the body uses are recorded in the graph
  holds_workspaces_ = true;
  const cudaStream_t previous = cuda::stream();
  pool_ = begin_capture_pool(device.index, stream_);
  set_stream(stream_);
  const cudaError_t began = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal);
  std::string failure;
  if (began != cudaSuccess) {
    failure = cat("cudaStreamBeginCapture: ", cudaGetErrorString(began));
  } else {
    try {
      body();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  cudaGraph_t g = nullptr;
  const cudaError_t ended = began == cudaSuccess ? cudaStreamEndCapture(stream_, &g) : began;
  end_capture_pool();
  set_stream(previous);
  if (!failure.empty() || ended != cudaSuccess) {
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();  // a failed capture leaves an error behind; later calls must not see it
    release();
    if (!failure.empty()) fail("cuda graph: capture failed: ", failure);
    fail("cuda graph: capture failed: ", cudaGetErrorString(ended),
         " (the captured region did something a graph cannot hold: a synchronisation, a copy to the host or"
         " work on the legacy default stream)");
  }
  graph_ = g;
  size_t n = 0;
  TRICK_CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &n));
  nodes_ = n;
  const cudaError_t inst = cudaGraphInstantiate(&exec_, graph_, 0);
  if (inst != cudaSuccess) {
    cudaGetLastError();
    exec_ = nullptr;
    release();
    fail("cuda graph: cudaGraphInstantiate failed: ", cudaGetErrorString(inst));
  }
  TRICK_CUDA_CHECK(cudaGraphUpload(exec_, stream_));
}

void Graph::replay() {
  TRICK_CHECK(exec_, "cuda graph: replay() before a successful capture()");
  DeviceGuard guard(device_);
  TRICK_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
}

void Graph::sync() {
  if (stream_) TRICK_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace cuda
}  // namespace trick
