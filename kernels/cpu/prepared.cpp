// The prepared-weights cache (see prepared.h) and the FrozenConvWeights scope (kernels/conv.h).
#include "kernels/cpu/prepared.h"

#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <utility>

#include "kernels/conv.h"
#include "kernels/cpu/sgemm_kernel.h"

namespace trick {
namespace cpu {

namespace {

struct Entry {
  Tensor pin;                // a view of the weights: their memory stays theirs while we hold it
  std::vector<float> store;  // the copy, 64-byte aligned inside
  const float* data = nullptr;
};

struct Cache {
  std::mutex mu;
  std::atomic<int> scopes{0};  // read without the lock: calls outside any scope return at once
  // By the weights' address, then the layout (looked up by reference: no copy per call).
  std::map<const float*, std::map<std::vector<int64_t>, std::shared_ptr<Entry>>> entries;
  PreparedStats stats;
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: scopes may end during static destruction
  return *c;
}

}  // namespace

std::shared_ptr<const float> prepared_weights(const Tensor& w, const std::vector<int64_t>& layout, size_t floats,
                                              const std::function<void(float*)>& build) {
  Cache& c = cache();
  if (c.scopes.load(std::memory_order_relaxed) == 0 || !w.defined()) return nullptr;
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.scopes == 0) return nullptr;
  auto& of_w = c.entries[w.data()];
  auto it = of_w.find(layout);
  if (it != of_w.end()) {
    ++c.stats.hits;
    // Shares the entry's ownership: a caller holding it keeps the copy alive even if the last
    // scope ends meanwhile on another thread.
    return std::shared_ptr<const float>(it->second, it->second->data);
  }
  const size_t bytes = (floats + 16) * sizeof(float);
  if (static_cast<size_t>(c.stats.bytes) + bytes > kPreparedLimitBytes) return nullptr;
  auto e = std::make_shared<Entry>();
  float* out = nullptr;
  try {
    out = sgemm::aligned_floats(e->store, floats);
  } catch (const std::bad_alloc&) {
    return nullptr;  // no room to keep it: the caller prepares a copy of its own, as without a scope
  }
  e->pin = w;
  // Built under the lock (on the pool's threads): another caller of the same layer waits for
  // it instead of building it twice.
  build(out);
  e->data = out;
  of_w.emplace(layout, e);
  ++c.stats.builds;
  ++c.stats.entries;
  c.stats.bytes += static_cast<int64_t>(bytes);
  return std::shared_ptr<const float>(e, e->data);
}

PreparedStats prepared_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

}  // namespace cpu

FrozenConvWeights::FrozenConvWeights() {
  cpu::Cache& c = cpu::cache();
  std::lock_guard<std::mutex> lock(c.mu);
  ++c.scopes;
}

FrozenConvWeights::~FrozenConvWeights() {
  cpu::Cache& c = cpu::cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (--c.scopes > 0) return;
  c.entries.clear();
  c.stats.entries = 0;
  c.stats.bytes = 0;
}

bool FrozenConvWeights::open() { return cpu::cache().scopes.load(std::memory_order_relaxed) > 0; }

}  // namespace trick
