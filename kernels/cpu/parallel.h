// The CPU kernels' threads: a small pool built for a shared, oversubscribed machine.
//
// OpenMP's parallel regions end in a barrier that every thread of the team must reach, so
// when the OS has not scheduled one of our threads (other jobs on the same cores), the
// others wait for it, spinning; measured on the 2-core build machine under load 7, two
// threads ran Inception's step 7x slower than one. Here the caller takes part and items
// are claimed one at a time from a shared counter: a worker that wakes late finds fewer
// items, or none, and the caller only ever waits for items that were actually started.
// Idle workers spin briefly (TRICK_SPIN_US, default 50 us) and then sleep.
#pragma once
#include <cstdint>
#include <functional>

namespace trick {
namespace cpu {

// Runs body(i) for every i in [0, n) on up to num_threads() threads (kernels/gemm.h), the
// caller included, and returns when all have returned. Calls from inside a body run inline.
// An exception thrown by a body is rethrown here (the first one; the other items still run).
void parallel_for(int64_t n, const std::function<void(int64_t)>& body);

// [0, n) in about `blocks` contiguous ranges (at least `min_per_block` each, at most as many
// as there are threads x 4): body(begin, end). For loops of equal-cost iterations.
void parallel_range(int64_t n, int64_t min_per_block, const std::function<void(int64_t, int64_t)>& body);

}  // namespace cpu
}  // namespace trick
