// Graph-safe CUDA allocation: the caching allocator's side of capturing a CUDA graph
// (kernels/cuda/graph.h is the only intended caller; defined in tensor/device.cpp).
//
// A captured graph replays the device addresses it was captured with. So while a graph is
// captured, the capturing thread's allocations on that device come from a private pool
// (its own free blocks, then the shared cache's, then cudaMalloc), and every block freed
// during the capture joins that pool too (captured work may still read it at replay).
// A pool's blocks are never handed to anyone else while its graph lives; release_capture_pool
// gives them back to the shared cache once the graph is destroyed.
//
// During a capture the same thread's device copies and fills are captured instead of run:
// device-to-device copies and fills become graph nodes on the capture stream, and a copy
// from host memory is staged through pinned memory the pool keeps, so a replay copies the
// bytes the host had at capture time (constants such as resampling tables). A copy to the
// host cannot be captured and throws naming the capture.
#pragma once
#include <cstdint>

namespace trick {

// Starts routing (see above) for this thread on cuda:`device`, with copies captured on
// `stream` (a cudaStream_t). One capture at a time per process. Returns the pool's id (> 0).
uint64_t begin_capture_pool(int device, void* stream);
// Stops the routing; the pool stays reserved for its graph.
void end_capture_pool();
// The pool's graph is gone: its free blocks and pinned staging go back (blocks still held
// by tensors go back to the shared cache when those are freed). Never during a capture.
void release_capture_pool(uint64_t id);
// True while this thread's allocations are being routed into a capture pool.
bool capturing_allocations();

// Frees the shared cache's free blocks on cuda:`device`, so that memory allocated outside the
// cache (kernels/cuda/runtime.h's workspaces) can try again after cudaMalloc found the GPU
// full, as the cache itself does. Not during a capture.
void release_cached_blocks(int device);

// Counters for tests and benchmarks.
struct CudaAllocStats {
  int64_t mallocs = 0;         // cudaMalloc calls made by the cache so far
  int64_t live_pools = 0;      // pools not yet released
  int64_t pool_blocks = 0;     // blocks (free or in use) tagged with a live pool
  int64_t cached_blocks = 0;   // free blocks in the shared cache
};
CudaAllocStats cuda_alloc_stats();

}  // namespace trick
