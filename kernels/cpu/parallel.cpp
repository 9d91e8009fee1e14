// The CPU thread pool (see parallel.h).
#include "kernels/cpu/parallel.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "kernels/gemm.h"

namespace trick {
namespace cpu {

namespace {

using Clock = std::chrono::steady_clock;

thread_local bool t_inside = false;  // this thread is running a body: nested calls run inline

std::chrono::nanoseconds spin_time() {
  static const std::chrono::nanoseconds t = [] {
    const char* e = std::getenv("TRICK_SPIN_US");
    const long us = e ? std::strtol(e, nullptr, 10) : 50;
    return std::chrono::nanoseconds(std::max(0L, us) * 1000);
  }();
  return t;
}

// Spins until done() or the spin time has passed; true if done().
template <typename F>
bool spin_until(F done) {
  const auto limit = spin_time();
  if (limit.count() == 0) return done();
  const auto t0 = Clock::now();
  for (int i = 0;; ++i) {
    if (done()) return true;
    _mm_pause();
    if ((i & 63) == 63 && Clock::now() - t0 > limit) return done();
  }
}

struct Job {
  const std::function<void(int64_t)>* body = nullptr;
  int64_t n = 0;
  int max_workers = 0;                // workers allowed to join (threads - 1)
  std::atomic<int64_t> next{0};       // the next unclaimed item
  std::atomic<int64_t> done{0};       // items finished
  std::atomic<int> joined{0};         // workers that joined
  std::atomic<int> inside{0};         // workers still working on it
  std::exception_ptr error;           // the first exception (guarded by Pool::mu_)
};

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  void run(int64_t n, int threads, const std::function<void(int64_t)>& body) {
    std::lock_guard<std::mutex> one_at_a_time(run_mu_);  // callers from several threads take turns
    Job job;
    job.body = &body;
    job.n = n;
    job.max_workers = threads - 1;
    grow(threads - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work(job);
    {
      // No worker can join from here on; wait for those that did.
      std::lock_guard<std::mutex> lock(mu_);
      job_ = nullptr;
    }
    auto finished = [&] {
      return job.done.load(std::memory_order_acquire) == n && job.inside.load(std::memory_order_acquire) == 0;
    };
    if (!spin_until(finished)) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, finished);
    }
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  // Items are claimed one by one, so a job finishes with any number of workers: where no more
  // threads can be started (their stacks do not fit under an address-space limit, or a process
  // limit), the pool keeps those it has, and the caller works too, instead of the command
  // failing with "Resource temporarily unavailable".
  void grow(int workers) {
    while (!cannot_grow_ && static_cast<int>(threads_.size()) < workers) {
      const int index = static_cast<int>(threads_.size());
      try {
        threads_.emplace_back([this, index] { worker(index); });
      } catch (const std::system_error&) {
        cannot_grow_ = true;
      }
    }
  }

  // Claims and runs items until none are left.
  void work(Job& job) {
    t_inside = true;
    for (;;) {
      const int64_t i = job.next.fetch_add(1, std::memory_order_relaxed);
      if (i >= job.n) break;
      try {
        (*job.body)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!job.error) job.error = std::current_exception();
      }
      job.done.fetch_add(1, std::memory_order_acq_rel);
    }
    t_inside = false;
  }

  void worker(int index) {
    uint64_t seen = 0;
    for (;;) {
      auto news = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(news)) {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || news(); });
      }
      Job* job = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
        seen = generation_.load(std::memory_order_acquire);
        if (job_ && index < job_->max_workers) {
          job = job_;
          job->inside.fetch_add(1, std::memory_order_acq_rel);
        }
      }
      if (!job) continue;
      work(*job);
      // The caller may be asleep waiting for us: take the lock so the notify is not lost.
      std::lock_guard<std::mutex> lock(mu_);
      job->inside.fetch_sub(1, std::memory_order_acq_rel);
      done_.notify_all();
    }
  }

  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0};
  Job* job_ = nullptr;  // guarded by mu_
  bool stop_ = false;
  bool cannot_grow_ = false;  // a thread failed to start (guarded by run_mu_)
  std::vector<std::thread> threads_;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destructors
  return *p;
}

}  // namespace

void parallel_for(int64_t n, const std::function<void(int64_t)>& body) {
  if (n <= 0) return;
  const int threads = num_threads();
  if (n == 1 || threads <= 1 || t_inside) {
    std::exception_ptr error;  // as on the pool: every item runs, the first error is rethrown
    for (int64_t i = 0; i < n; ++i) {
      try {
        body(i);
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    return;
  }
  pool().run(n, threads, body);
}

void parallel_range(int64_t n, int64_t min_per_block, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  const int64_t threads = num_threads();
  const int64_t blocks = std::max<int64_t>(1, std::min(threads * 4, n / std::max<int64_t>(1, min_per_block)));
  if (blocks == 1 || threads <= 1 || t_inside) {
    body(0, n);
    return;
  }
  parallel_for(blocks, [&](int64_t b) { body(n * b / blocks, n * (b + 1) / blocks); });
}

}  // namespace cpu
}  // namespace trick
