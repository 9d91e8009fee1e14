// The CUDA emulator: runs the kernels of kernels/cuda/ on the CPU (kernels/cuda/emu/emu.h
// for the device side) and answers the CUDA runtime calls trick makes, so trick_emu_tests
// can compare every CUDA kernel with its CPU twin on a machine without a GPU.
// kernels/cuda/emu/README.md says what it models and what it does not.
#include "kernels/cuda/emu/emu.h"

#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>

namespace trick {
namespace emu {
namespace {

// --- the fibers of one block -------------------------------------------------------------

enum class Wait { None, Block, Warp, Done };

// A fiber's saved context: on x86-64 (without AddressSanitizer) its stack pointer, with
// the callee-saved registers on its stack, switched by trick_emu_switch below (no system
// call: glibc's swapcontext saves the signal mask each time, a system call that made up half
// the emulator's run time); elsewhere (or with TRICK_EMU_UCONTEXT defined) a ucontext_t.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(TRICK_EMU_UCONTEXT)
#define TRICK_EMU_ASM_SWITCH 1
struct Context {
  void* sp = nullptr;
};
#else
struct Context {
  ucontext_t uc;
};
#endif

struct Fiber {
  Context ctx;
  Wait wait = Wait::None;
  uint3 tid;
  unsigned warp_ops = 0;  // warp-level operations done: its parity picks the WarpSet
};

// What a warp exchanges at a warp-level operation. Two sets, used alternately: a lane
// writes set p of its next operation while slower lanes may still read set 1 - p of the
// last one (they have, before the next operation's barrier can release).
enum class WarpOp { None, Shfl, MmaTf32, MmaBf16 };
constexpr int kMaxFrags = 4;  // mma_many: up to 4 x 4 products in one exchange
struct WarpSet {
  WarpOp op = WarpOp::None;
  int mf = 1, nf = 1;  // mma: A and B fragments per lane (mf x nf products)
  uint64_t value[32];
  uint32_t a[32][kMaxFrags][4];
  uint32_t b[32][kMaxFrags][2];
  float c[32][kMaxFrags * kMaxFrags][4];  // a lane's accumulators in; the products' d out
};
struct WarpSlots {
  WarpSet set[2];
  unsigned parity = 0;  // the set the operation now gathering uses
};

struct BlockRun {
  std::vector<Fiber> fibers;
  std::vector<WarpSlots> warps;
  Context scheduler;
  uint3 block;
  dim3 block_dim, grid_dim;
  const std::function<void()>* body = nullptr;
  int current = 0;
  std::vector<unsigned char> dynamic;
  const char* failure = nullptr;  // set by a fiber that found the kernel broken
  std::string failure_text;
};

thread_local BlockRun* g_run = nullptr;

// Fiber stacks, mapped once per host thread and reused by every block.
constexpr size_t kStack = 256 * 1024;
struct Stacks {
  unsigned char* base = nullptr;
  size_t count = 0;
  ~Stacks() {
    if (base) munmap(base, count * kStack);
  }
  unsigned char* get(size_t i, size_t need) {
    if (need > count) {
      if (base) munmap(base, count * kStack);
      void* p =
          mmap(nullptr, need * kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      base = static_cast<unsigned char*>(p);
      count = need;
    }
    return base + i * kStack;
  }
};
thread_local Stacks g_stacks;

#if defined(TRICK_EMU_ASM_SWITCH)
}  // namespace
}  // namespace emu
}  // namespace trick
// trick_emu_switch(save, to): pushes the callee-saved registers, stores the stack pointer in
// *save, continues on stack `to`, pops what it holds. (Kernels never change the floating-point
// control registers, so they are not switched.)
extern "C" void trick_emu_switch(void** save, void* to);
asm(R"(
.pushsection .text
.globl trick_emu_switch
.type trick_emu_switch,@function
trick_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size trick_emu_switch,.-trick_emu_switch
.popsection
)");
namespace trick {
namespace emu {
namespace {
#endif

void run_fiber_body() {
  BlockRun* run = g_run;
  try {
    (*run->body)();
  } catch (const std::exception& e) {
    if (!run->failure) {
      run->failure = "exception";
      run->failure_text = e.what();
    }
  } catch (...) {
    if (!run->failure) {
      run->failure = "exception";
      run->failure_text = "(not a std::exception)";
    }
  }
  run->fibers[static_cast<size_t>(run->current)].wait = Wait::Done;
}

// Switches from context `from` to context `to`.
void switch_to(Context& from, Context& to) {
#if defined(TRICK_EMU_ASM_SWITCH)
  trick_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

#if defined(TRICK_EMU_ASM_SWITCH)
[[noreturn]] void fiber_trampoline() {
  run_fiber_body();
  BlockRun* run = g_run;
  trick_emu_switch(&run->fibers[static_cast<size_t>(run->current)].ctx.sp, run->scheduler.sp);
  std::abort();  // a finished fiber is never resumed
}
#else
void fiber_entry() { run_fiber_body(); }  // uc_link returns to the scheduler
#endif

// Prepares `c` to start the fiber on `stack` (kStack bytes) at its first switch.
// Stacks kStack apart would put every fiber's hot top in the same cache sets (kStack is a
// multiple of the L1 and L2 way sizes): each starts `stagger` bytes lower, a different set.
size_t stagger(unsigned i) { return (static_cast<size_t>(i) * 1088) % 65536; }

void make_fiber(Context& c, unsigned char* stack, unsigned i, BlockRun& r) {
#if defined(TRICK_EMU_ASM_SWITCH)
  (void)r;
  auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(stack + kStack - stagger(i)) & ~uintptr_t{15}));
  uint64_t* sp = top;
  *--sp = 0;                                              // the trampoline's return address slot
  *--sp = reinterpret_cast<uint64_t>(&fiber_trampoline);  // where the first switch returns to
  for (int i = 0; i < 6; ++i) *--sp = 0;                  // rbp, rbx, r12 to r15
  c.sp = sp;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = kStack - stagger(i);
  c.uc.uc_link = &r.scheduler.uc;
  makecontext(&c.uc, fiber_entry, 0);
#endif
}

Fiber& me() { return g_run->fibers[static_cast<size_t>(g_run->current)]; }

void yield(Wait w) {
  Fiber& f = me();
  f.wait = w;
  switch_to(f.ctx, g_run->scheduler);
}

void complete_warp_op(WarpSlots& w);

// A warp-level operation's wait, passed lane to lane: a lane that arrives switches straight
// to the next lane of its warp (which must not have arrived, exited or stopped at
// __syncthreads: that is divergence, and the launch fails); the last lane completes the
// operation for the warp and switches to the first, and so on round the warp until it comes
// back. One switch per lane, no trip through the scheduler.
void warp_wait() {
  BlockRun& r = *g_run;
  const unsigned n = static_cast<unsigned>(r.fibers.size());
  const unsigned i = static_cast<unsigned>(r.current), begin = i / 32 * 32, end = std::min(n, begin + 32);
  Fiber& f = r.fibers[i];
  f.wait = Wait::Warp;
  unsigned next;
  if (i + 1 < end) {
    next = i + 1;
    if (r.fibers[next].wait != Wait::None) {
      r.failure = "divergence";
      r.failure_text = "lane " + std::to_string(i % 32) +
                       " reached a warp-level operation (__shfl_down_sync, __syncwarp, mma.sync) that lane " +
                       std::to_string(next % 32) + " cannot reach (it " +
                       (r.fibers[next].wait == Wait::Done ? "exited" : "waits at __syncthreads") + ")";
      switch_to(f.ctx, r.scheduler);
      std::abort();  // never resumed
    }
  } else {
    complete_warp_op(r.warps[i / 32]);
    for (unsigned j = begin; j < end; ++j) r.fibers[j].wait = Wait::None;
    if (begin == i) return;  // a warp of one thread
    next = begin;
  }
  r.current = static_cast<int>(next);
  switch_to(f.ctx, r.fibers[next].ctx);
  // back: the operation is complete (whoever switched here set r.current to this lane)
}

int lane_of(const Fiber& f, const BlockRun& r) {
  const unsigned linear = f.tid.x + r.block_dim.x * (f.tid.y + r.block_dim.y * f.tid.z);
  return static_cast<int>(linear % 32);
}

// Runs every thread of one block to its end. Throws on a deadlock (threads waiting at
// barriers that can never all be reached).
void run_block(BlockRun& r) {
  const unsigned n = r.block_dim.x * r.block_dim.y * r.block_dim.z;
  r.fibers.assign(n, Fiber{});
  r.warps.resize((n + 31) / 32);
  for (WarpSlots& w : r.warps) {  // the fibers count their warp operations from 0 again
    w.parity = 0;
    w.set[0].op = w.set[1].op = WarpOp::None;
  }
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = r.fibers[i];
    f.tid = make_uint3(i % r.block_dim.x, (i / r.block_dim.x) % r.block_dim.y, i / (r.block_dim.x * r.block_dim.y));
    make_fiber(f.ctx, g_stacks.get(i, n), i, r);
  }
  // Warp by warp: run its lanes (which pass warp-level operations among themselves,
  // warp_wait) until each has exited or waits at __syncthreads; then release the block.
  for (;;) {
    unsigned live = 0;
    for (unsigned w = 0; w * 32 < n; ++w) {
      const unsigned begin = w * 32, end = std::min(n, begin + 32);
      for (unsigned i = begin; i < end;) {
        if (r.fibers[i].wait != Wait::None) {
          ++i;
          continue;
        }
        r.current = static_cast<int>(i);
        switch_to(r.scheduler, r.fibers[i].ctx);
        if (r.failure) return;  // the other fibers are abandoned mid-kernel: the launch fails
        i = begin;              // a chain of lanes may have run: look again from the start
      }
      for (unsigned i = begin; i < end; ++i) {
        if (r.fibers[i].wait == Wait::Warp) {
          r.failure = "deadlock";
          r.failure_text =
              "lanes of a warp wait at a warp-level operation (__shfl_down_sync, __syncwarp, "
              "mma.sync) that others of its lanes cannot reach (they exited or wait at __syncthreads)";
          return;
        }
        live += r.fibers[i].wait == Wait::Block;
      }
    }
    if (live == 0) break;
    for (Fiber& f : r.fibers)
      if (f.wait == Wait::Block) f.wait = Wait::None;
  }
}

// --- devices, memory, streams and graphs ---------------------------------------------------

thread_local cudaError_t g_last_error = cudaSuccess;
cudaError_t fail(cudaError_t e) {
  g_last_error = e;
  return e;
}

// What cudaMalloc may hand out in all: 16 GiB, or TRICK_EMU_MEMORY (bytes, or with a suffix
// K, M or G), so that tests can run a command out of GPU memory at any allocation.
size_t global_memory() {
  static const size_t bytes = [] {
    const char* v = std::getenv("TRICK_EMU_MEMORY");
    if (!v || !*v) return size_t{16} << 30;
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v, &end, 10);
    const int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
    if (shift) ++end;
    if (end == v || *end || n == 0 || n > (~0ull >> shift)) {
      std::fprintf(stderr, "trick CUDA emulator: TRICK_EMU_MEMORY=%s: not a size (bytes, or with K, M or G)\n", v);
      std::exit(2);
    }
    return static_cast<size_t>(n << shift);
  }();
  return bytes;
}

// Faults on request, so tests can make a CUDA call fail as a GPU's would (TRICK_EMU_FAULT):
//   malloc:N       the Nth cudaMalloc returns cudaErrorMemoryAllocation (a passing shortage:
//                  another process's memory); malloc:N+ the Nth and every later one (the
//                  GPU's memory is full from then on);
//   launch:N       the Nth kernel to run faults (counted as kernels run, so a graph's replay
//                  counts each of its kernels): it does nothing, and from then on every call
//                  returns cudaErrorLaunchFailure, as every call of a GPU context does after a
//                  kernel fault (the error is "sticky": cudaGetLastError does not clear it);
//   capture:N      the Nth cudaStreamEndCapture returns cudaErrorStreamCaptureInvalidated;
//   instantiate:N  the Nth cudaGraphInstantiate returns cudaErrorMemoryAllocation;
//                  (capture:N+ and instantiate:N+: the Nth and every later one);
//   count          at exit, print how many of each were made, so a test knows what to sweep,
//                  and the most device memory allocated at once.
enum Fault { kMalloc, kLaunch, kCapture, kInstantiate, kFaults };
constexpr const char* kFaultNames[kFaults] = {"malloc", "launch", "capture", "instantiate"};
struct Faults {
  int kind = -1;             // which call fails, or -1
  unsigned long long n = 0;  // the how-manyth
  bool later = false;        // and every later one
  std::atomic<unsigned long long> made[kFaults] = {};
};
void print_counts();
Faults& faults() {
  static Faults* f = [] {
    auto* f = new Faults;
    const char* v = std::getenv("TRICK_EMU_FAULT");
    if (!v || !*v) return f;
    std::string s = v;
    if (s == "count") {
      std::atexit(print_counts);
      return f;
    }
    if (s.back() == '+') f->later = true, s.pop_back();
    const size_t colon = s.find(':');
    for (int k = 0; k < kFaults && colon != std::string::npos; ++k)
      if (s.substr(0, colon) == kFaultNames[k]) f->kind = k;
    char* end = nullptr;
    if (f->kind >= 0) f->n = std::strtoull(s.c_str() + colon + 1, &end, 10);
    if (f->kind < 0 || f->n == 0 || end == s.c_str() + colon + 1 || *end) {
      std::fprintf(stderr,
                   "trick CUDA emulator: TRICK_EMU_FAULT=%s: not 'count', KIND:N or KIND:N+ (KIND malloc, "
                   "launch, capture or instantiate; N from 1)\n",
                   v);
      std::exit(2);
    }
    return f;
  }();
  return *f;
}
// Counts a call of `kind`; true when it is to fail.
bool fault_now(Fault kind) {
  Faults& f = faults();
  const unsigned long long i = ++f.made[kind];
  return f.kind == kind && (f.later ? i >= f.n : i == f.n);
}
// The sticky error of a lost context (a faulted kernel), or cudaSuccess.
std::atomic<int> g_sticky{cudaSuccess};
cudaError_t sticky() { return static_cast<cudaError_t>(g_sticky.load()); }
// The sticky error, set as the last error, once the context is lost; else cudaSuccess. Every
// call returns it first; a free or destroy frees (so that leak checks stay quiet), then returns it.
cudaError_t lost() { return sticky() != cudaSuccess ? fail(sticky()) : cudaSuccess; }

struct Op {
  std::function<void()> run;
};
struct Graph {
  std::vector<Op> ops;
};
struct GraphExec {
  std::vector<Op> ops;
};
struct Stream {
  bool capturing = false;
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  Graph* graph = nullptr;
  std::thread::id owner;
};
struct Event {
  std::chrono::steady_clock::time_point t;
  bool recorded = false;
};

struct State {
  std::mutex mu;
  std::map<const void*, size_t> device;  // allocation -> bytes
  std::map<const void*, size_t> host;    // pinned host allocation -> bytes
  size_t device_bytes = 0;
  size_t peak_bytes = 0;          // the most device_bytes has been
  std::vector<Stream*> captures;  // streams capturing now
};
State& state() {
  static State* s = new State;  // outlives every static destructor that frees memory
  return *s;
}
void print_counts() {
  Faults& f = faults();
  std::fprintf(stderr, "trick CUDA emulator: calls made:");
  for (int k = 0; k < kFaults; ++k) std::fprintf(stderr, " %s %llu", kFaultNames[k], f.made[k].load());
  std::lock_guard<std::mutex> lock(state().mu);
  std::fprintf(stderr, "; at most %zu bytes allocated\n", state().peak_bytes);
}
thread_local cudaStreamCaptureMode g_thread_mode = cudaStreamCaptureModeGlobal;

// Whether this thread may make a "potentially unsafe" call (cudaMalloc, a synchronous
// copy) now, by the rules of cudaStreamCaptureMode.
bool unsafe_call_allowed() {
  if (g_thread_mode == cudaStreamCaptureModeRelaxed) return true;
  std::lock_guard<std::mutex> lock(state().mu);
  for (Stream* s : state().captures) {
    if (s->mode == cudaStreamCaptureModeRelaxed) continue;
    if (s->owner == std::this_thread::get_id()) return false;
    if (s->mode == cudaStreamCaptureModeGlobal && g_thread_mode == cudaStreamCaptureModeGlobal) return false;
  }
  return true;
}
void invalidate_captures() {
  std::lock_guard<std::mutex> lock(state().mu);
  for (Stream* s : state().captures) s->invalidated = true;
}
bool any_capture() {
  std::lock_guard<std::mutex> lock(state().mu);
  return !state().captures.empty();
}

// Runs op now, or records it when `stream` is capturing. Work on the legacy default stream
// while a capture is in progress is CUDA's cudaErrorStreamCaptureImplicit.
cudaError_t issue(cudaStream_t stream, std::function<void()> op) {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) {
    if (any_capture()) {
      invalidate_captures();
      return fail(cudaErrorStreamCaptureImplicit);
    }
    op();
    return cudaSuccess;
  }
  auto* s = reinterpret_cast<Stream*>(stream);
  if (s->capturing) {
    s->graph->ops.push_back(Op{std::move(op)});
    return cudaSuccess;
  }
  op();
  return cudaSuccess;
}

bool is_device(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto& m = state().device;
  auto it = m.upper_bound(p);
  if (it == m.begin()) return false;
  --it;
  const auto* base = static_cast<const unsigned char*>(it->first);
  const auto* q = static_cast<const unsigned char*>(p);
  return q >= base && q + bytes <= base + it->second;
}

}  // namespace

// --- the device side ---------------------------------------------------------------------

const uint3& thread_idx() { return me().tid; }
const uint3& block_idx() { return g_run->block; }
const dim3& block_dim() { return g_run->block_dim; }
const dim3& grid_dim() { return g_run->grid_dim; }
void* dynamic_shared() { return g_run->dynamic.data(); }
void syncthreads() { yield(Wait::Block); }

namespace {
// The calling lane's set for its next warp-level operation `op`.
WarpSet& warp_set(WarpOp op) {
  Fiber& f = me();
  WarpSlots& w = g_run->warps[static_cast<size_t>(g_run->current / 32)];
  WarpSet& set = w.set[f.warp_ops++ & 1];
  if (set.op != op && set.op != WarpOp::None) {
    g_run->failure = "divergence";
    g_run->failure_text = "the lanes of a warp reached different warp-level operations";
  }
  set.op = op;
  return set;
}
}  // namespace

void syncwarp() {
  warp_set(WarpOp::None);
  warp_wait();
}

uint64_t shfl_down_bits(unsigned mask, uint64_t bits, unsigned delta, int width) {
  if (mask != 0xffffffffu) trap();  // trick's kernels shuffle whole warps only
  const int lane = lane_of(me(), *g_run);
  WarpSet& s = warp_set(WarpOp::Shfl);
  s.value[lane] = bits;
  warp_wait();
  const int seg = lane % width;
  return seg + static_cast<int>(delta) < width ? s.value[lane + static_cast<int>(delta)] : bits;
}

void trap() {
  g_run->failure = "trap";
  g_run->failure_text = "__trap() (an unreachable branch of a kernel was reached)";
  me().wait = Wait::Done;
  switch_to(me().ctx, g_run->scheduler);
  std::abort();  // never resumed
}

namespace {
// The tensor cores read a TF32 operand as the top 19 bits of its register (the rest is
// ignored); a bf16 operand is 16 bits. (The hardware's order of the sums and its internal
// precision are not specified; here: fp32, in k order.)
float tf32_value(uint32_t w) {
  w &= 0xffffe000u;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}
float bf16_value(uint32_t half) {
  const uint32_t w = half << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

// D = A * B + C for the warp, from the fragments every lane published, with the layouts of
// the PTX ISA ("Matrix Fragments for mma.m16n8k8" and "for mma.m16n8k16"):
//   TF32 m16n8k8: a_i holds row groupID (+8 for a1, a3), column threadID_in_group (+4 for
//     a2, a3); b_i row threadID_in_group (+4 for b1), column groupID.
//   bf16 m16n8k16: register r holds two elements, the lower column (row of B) in its low
//     half: A's a_{2r}, a_{2r+1} at row groupID (+8 for r = 1, 3), columns
//     2 * threadID_in_group + {0, 1} (+8 for r = 2, 3); B's register r rows
//     2 * threadID_in_group + {0, 1} (+8 for r = 1), column groupID.
//   C/D (both): c_i at row groupID (+8 for c2, c3), column 2 * threadID_in_group + (i & 1).
void mma_warp(WarpSet& s, bool bf16) {
  const int K = bf16 ? 16 : 8;
  float A[kMaxFrags][16][16], B[kMaxFrags][16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane >> 2, tig = lane % 4;
    for (int fi = 0; fi < s.mf; ++fi)
      for (int r = 0; r < 4; ++r) {
        const int row = group + 8 * (r & 1);
        const uint32_t w = s.a[lane][fi][r];
        if (bf16) {
          const int col = 2 * tig + 8 * (r >> 1);
          A[fi][row][col] = bf16_value(w & 0xffffu);
          A[fi][row][col + 1] = bf16_value(w >> 16);
        } else {
          A[fi][row][tig + 4 * (r >> 1)] = tf32_value(w);
        }
      }
    for (int fj = 0; fj < s.nf; ++fj)
      for (int r = 0; r < 2; ++r) {
        const uint32_t w = s.b[lane][fj][r];
        if (bf16) {
          const int k = 2 * tig + 8 * r;
          B[fj][k][group] = bf16_value(w & 0xffffu);
          B[fj][k + 1][group] = bf16_value(w >> 16);
        } else {
          B[fj][tig + 4 * r][group] = tf32_value(w);
        }
      }
  }
  for (int fi = 0; fi < s.mf; ++fi)
    for (int fj = 0; fj < s.nf; ++fj) {
      const int p = fi * s.nf + fj;
      float C[16][8];
      for (int lane = 0; lane < 32; ++lane)
        for (int r = 0; r < 4; ++r) C[(lane >> 2) + 8 * (r >> 1)][2 * (lane % 4) + (r & 1)] = s.c[lane][p][r];
      // Products of TF32 or bf16 values are exact in fp32 (so a separate multiply and add
      // round once, as a fused one would); the sums are fp32, in k order.
      for (int k = 0; k < K; ++k)  // k outermost: the 16 rows' sums do not wait on each other
        for (int i = 0; i < 16; ++i) {
          const float x = A[fi][i][k];
          for (int j = 0; j < 8; ++j) C[i][j] += x * B[fj][k][j];
        }
      for (int lane = 0; lane < 32; ++lane)
        for (int r = 0; r < 4; ++r) s.c[lane][p][r] = C[(lane >> 2) + 8 * (r >> 1)][2 * (lane % 4) + (r & 1)];
    }
}

// mf x nf mmas for the calling lane (d[i][j] += A_i B_j; d, a, b row-major): publish its
// fragments and accumulators, wait for the warp (whose release computes the products:
// complete_warp_op), take its accumulators back.
void mma_lane(WarpOp op, float* d, const uint32_t* a, const uint32_t* b, int mf, int nf) {
  if (mf < 1 || nf < 1 || mf > kMaxFrags || nf > kMaxFrags) trap();
  const int lane = lane_of(me(), *g_run);
  WarpSet& s = warp_set(op);
  s.mf = mf;
  s.nf = nf;
  for (int i = 0; i < mf; ++i)
    for (int r = 0; r < 4; ++r) s.a[lane][i][r] = a[i * 4 + r];
  for (int j = 0; j < nf; ++j)
    for (int r = 0; r < 2; ++r) s.b[lane][j][r] = b[j * 2 + r];
  for (int p = 0; p < mf * nf; ++p)
    for (int r = 0; r < 4; ++r) s.c[lane][p][r] = d[p * 4 + r];
  warp_wait();
  for (int p = 0; p < mf * nf; ++p)
    for (int r = 0; r < 4; ++r) d[p * 4 + r] = s.c[lane][p][r];
}

void complete_warp_op(WarpSlots& w) {
  WarpSet& s = w.set[w.parity];
  w.parity ^= 1;
  if (s.op == WarpOp::MmaTf32 || s.op == WarpOp::MmaBf16) mma_warp(s, s.op == WarpOp::MmaBf16);
  w.set[w.parity].op = WarpOp::None;  // free for the operation after next
}
}  // namespace

void mma_tf32_m16n8k8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  mma_lane(WarpOp::MmaTf32, d, a, b, 1, 1);
}
void mma_bf16_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  mma_lane(WarpOp::MmaBf16, d, a, b, 1, 1);
}
void mma_many(bool bf16, float* d, const uint32_t* a, const uint32_t* b, int mf, int nf) {
  mma_lane(bf16 ? WarpOp::MmaBf16 : WarpOp::MmaTf32, d, a, b, mf, nf);
}

void launch(const Config& c, const char* name, std::function<void()> body) {
  if (lost()) return;
  const unsigned long long threads = 1ull * c.block.x * c.block.y * c.block.z;
  if (threads == 0 || threads > 1024 || c.block.z > 64 || c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 ||
      c.grid.y > 65535 || c.grid.z > 65535 || c.grid.x > 2147483647u) {
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  if (c.shared > 48 * 1024) {  // beyond the default limit without cudaFuncSetAttribute
    fail(cudaErrorInvalidValue);
    return;
  }
  const Config config = c;
  auto run = [config, name, body = std::move(body)]() {
    if (sticky() != cudaSuccess) return;
    if (fault_now(kLaunch)) {
      g_sticky = cudaErrorLaunchFailure;
      return;
    }
    BlockRun r;
    r.block_dim = config.block;
    r.grid_dim = config.grid;
    r.body = &body;
    r.dynamic.assign(config.shared + 16, 0xff);
    BlockRun* outer = g_run;
    g_run = &r;
    for (unsigned z = 0; z < config.grid.z; ++z)
      for (unsigned y = 0; y < config.grid.y; ++y)
        for (unsigned x = 0; x < config.grid.x; ++x) {
          r.block = make_uint3(x, y, z);
          run_block(r);
          if (r.failure) {
            g_run = outer;
            std::fprintf(stderr, "cuda emulator: %s in block (%u, %u, %u) of a %s launch: %s\n", r.failure, x, y, z,
                         name, r.failure_text.c_str());
            std::abort();  // a kernel bug: stop here, as a GPU would fault (cudaErrorLaunchFailure)
          }
        }
    g_run = outer;
  };
  const cudaError_t e = issue(c.stream, std::move(run));
  if (e != cudaSuccess) fail(e);
}

}  // namespace emu
}  // namespace trick

// --- the runtime API ---------------------------------------------------------------------------

using trick::emu::fail;
using namespace trick::emu;

extern "C" {

cudaError_t cudaGetLastError() {
  if (sticky() != cudaSuccess) return sticky();  // not cleared: the context is lost
  const cudaError_t e = trick::emu::g_last_error;
  trick::emu::g_last_error = cudaSuccess;
  return e;
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorIllegalState:
      return "the operation is not permitted in the current state";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    default:
      return "unknown error (emulated)";
  }
}
cudaError_t cudaGetDeviceCount(int* n) {
  if (const cudaError_t err = lost()) return err;
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (const cudaError_t err = lost()) return err;
  return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int* d) {
  if (const cudaError_t err = lost()) return err;
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (const cudaError_t err = lost()) return err;
  if (d != 0) return fail(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "trick CUDA emulator (as an H200)");
  p->major = kMajor;
  p->minor = kMinor;
  p->multiProcessorCount = kMultiProcessors;
  p->totalGlobalMem = global_memory();
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->sharedMemPerBlock = 48 * 1024;
  p->regsPerBlock = 65536;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (const cudaError_t err = lost()) return err;
  if (d != 0) return fail(cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrMultiProcessorCount:
      *v = kMultiProcessors;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *v = kMajor;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *v = kMinor;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *v = 32;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *v = 1024;
      return cudaSuccess;
    default:
      return fail(cudaErrorInvalidValue);
  }
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void* f) {
  if (const cudaError_t err = lost()) return err;
  if (f == nullptr) return fail(cudaErrorInvalidDeviceFunction);
  std::memset(a, 0, sizeof *a);
  a->maxThreadsPerBlock = 1024;
  a->ptxVersion = a->binaryVersion = 10 * kMajor + kMinor;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (const cudaError_t err = lost()) return err;
  *p = nullptr;
  if (!unsafe_call_allowed()) {
    invalidate_captures();
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (fault_now(kMalloc)) return fail(cudaErrorMemoryAllocation);
  const size_t size = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
  {
    std::lock_guard<std::mutex> lock(state().mu);
    if (state().device_bytes + size > global_memory()) return fail(cudaErrorMemoryAllocation);
  }
  void* q = std::aligned_alloc(256, size);
  if (!q) return fail(cudaErrorMemoryAllocation);
  std::memset(q, 0xff, size);  // never zeroed on a GPU either: reads of unwritten memory see NaN
  std::lock_guard<std::mutex> lock(state().mu);
  state().device[q] = size;
  state().device_bytes += size;
  state().peak_bytes = std::max(state().peak_bytes, state().device_bytes);
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return lost();
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().device.find(p);
  if (it == state().device.end()) return fail(cudaErrorInvalidValue);
  state().device_bytes -= it->second;
  state().device.erase(it);
  std::free(p);
  return lost();
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) {
  if (const cudaError_t err = lost()) return err;
  *p = nullptr;
  if (!unsafe_call_allowed()) {
    invalidate_captures();
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  void* q = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  if (!q) return fail(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(state().mu);
  state().host[q] = bytes;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  if (!p) return lost();
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().host.find(p);
  if (it == state().host.end()) return fail(cudaErrorInvalidValue);
  state().host.erase(it);
  std::free(p);
  return lost();
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  if (const cudaError_t err = lost()) return err;
  std::memset(a, 0, sizeof *a);
  if (is_device(p, 1)) {
    a->type = cudaMemoryTypeDevice;
    a->devicePointer = const_cast<void*>(p);
  } else {
    std::lock_guard<std::mutex> lock(state().mu);
    auto& m = state().host;
    auto it = m.upper_bound(p);
    bool pinned = false;
    if (it != m.begin()) {
      --it;
      pinned = static_cast<const char*>(p) < static_cast<const char*>(it->first) + std::max<size_t>(it->second, 1);
    }
    a->type = pinned ? cudaMemoryTypeHost : cudaMemoryTypeUnregistered;
    a->hostPointer = const_cast<void*>(p);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t s) {
  if (const cudaError_t err = lost()) return err;
  if (n == 0) return cudaSuccess;
  return issue(s, [dst, src, n] { std::memmove(dst, src, n); });
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind k) {
  if (const cudaError_t err = lost()) return err;
  if (!unsafe_call_allowed()) {
    invalidate_captures();
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  return cudaMemcpyAsync(dst, src, n, k, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  if (const cudaError_t err = lost()) return err;
  if (n == 0) return cudaSuccess;
  if (!is_device(p, n)) return fail(cudaErrorInvalidValue);
  return issue(s, [p, v, n] { std::memset(p, v, n); });
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  if (const cudaError_t err = lost()) return err;
  if (!unsafe_call_allowed()) {
    invalidate_captures();
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  return cudaMemsetAsync(p, v, n, nullptr);
}
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int v, size_t width, size_t height, cudaStream_t s) {
  if (const cudaError_t err = lost()) return err;
  if (width == 0 || height == 0) return cudaSuccess;
  if (width > pitch || !is_device(p, pitch * (height - 1) + width)) return fail(cudaErrorInvalidValue);
  return issue(s, [p, pitch, v, width, height] {
    for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(p) + r * pitch, v, width);
  });
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  if (const cudaError_t err = lost()) return err;
  *s = reinterpret_cast<cudaStream_t>(new Stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  auto* st = reinterpret_cast<Stream*>(s);
  if (!st) return fail(cudaErrorInvalidResourceHandle);
  if (st->capturing) {
    std::lock_guard<std::mutex> lock(state().mu);
    auto& c = state().captures;
    c.erase(std::remove(c.begin(), c.end(), st), c.end());
    delete st->graph;
  }
  delete st;
  return lost();
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (const cudaError_t err = lost()) return err;
  auto* st = reinterpret_cast<Stream*>(s);
  if (st && st->capturing) {
    st->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (!st && any_capture()) {
    invalidate_captures();
    return fail(cudaErrorStreamCaptureImplicit);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  if (const cudaError_t err = lost()) return err;
  auto* st = reinterpret_cast<Stream*>(s);
  if (!st || st == reinterpret_cast<Stream*>(cudaStreamLegacy)) return fail(cudaErrorStreamCaptureUnsupported);
  if (st->capturing) return fail(cudaErrorIllegalState);
  st->capturing = true;
  st->invalidated = false;
  st->mode = mode;
  st->graph = new Graph;
  st->owner = std::this_thread::get_id();
  std::lock_guard<std::mutex> lock(state().mu);
  state().captures.push_back(st);
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  if (const cudaError_t err = lost()) return err;
  auto* st = reinterpret_cast<Stream*>(s);
  *g = nullptr;
  if (!st || !st->capturing) return fail(cudaErrorIllegalState);
  {
    std::lock_guard<std::mutex> lock(state().mu);
    auto& c = state().captures;
    c.erase(std::remove(c.begin(), c.end(), st), c.end());
  }
  st->capturing = false;
  Graph* graph = st->graph;
  st->graph = nullptr;
  if (st->invalidated || fault_now(kCapture)) {
    delete graph;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *g = reinterpret_cast<cudaGraph_t>(graph);
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (const cudaError_t err = lost()) return err;
  auto* st = reinterpret_cast<Stream*>(s);
  if (!st) {
    *status = cudaStreamCaptureStatusNone;
    return cudaSuccess;
  }
  *status = !st->capturing    ? cudaStreamCaptureStatusNone
            : st->invalidated ? cudaStreamCaptureStatusInvalidated
                              : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  std::swap(*mode, trick::emu::g_thread_mode);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  if (const cudaError_t err = lost()) return err;
  if (!g) return fail(cudaErrorInvalidValue);
  if (fault_now(kInstantiate)) return fail(cudaErrorMemoryAllocation);
  *e = reinterpret_cast<cudaGraphExec_t>(new GraphExec{reinterpret_cast<Graph*>(g)->ops});
  return cudaSuccess;
}
cudaError_t cudaGraphUpload(cudaGraphExec_t e, cudaStream_t) {
  if (const cudaError_t err = lost()) return err;
  return e ? cudaSuccess : fail(cudaErrorInvalidValue);
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
  if (const cudaError_t err = lost()) return err;
  if (!e) return fail(cudaErrorInvalidValue);
  auto* exec = reinterpret_cast<GraphExec*>(e);
  return issue(s, [exec] {
    for (Op& op : exec->ops) op.run();
  });
}
cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t* nodes, size_t* n) {
  if (const cudaError_t err = lost()) return err;
  if (!g) return fail(cudaErrorInvalidValue);
  auto& ops = reinterpret_cast<Graph*>(g)->ops;
  if (nodes) {
    for (size_t i = 0; i < std::min(*n, ops.size()); ++i) nodes[i] = reinterpret_cast<cudaGraphNode_t>(&ops[i]);
  }
  *n = ops.size();
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete reinterpret_cast<Graph*>(g);
  return lost();
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete reinterpret_cast<GraphExec*>(e);
  return lost();
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (const cudaError_t err = lost()) return err;
  *e = reinterpret_cast<cudaEvent_t>(new Event);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<Event*>(e);
  return lost();
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (const cudaError_t err = lost()) return err;
  auto* ev = reinterpret_cast<Event*>(e);
  if (!ev) return fail(cudaErrorInvalidResourceHandle);
  return issue(s, [ev] {
    ev->t = std::chrono::steady_clock::now();
    ev->recorded = true;
  });
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (const cudaError_t err = lost()) return err;
  return e ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (const cudaError_t err = lost()) return err;
  auto *x = reinterpret_cast<Event*>(a), *y = reinterpret_cast<Event*>(b);
  if (!x || !y) return fail(cudaErrorInvalidResourceHandle);
  if (!x->recorded || !y->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(y->t - x->t).count();
  return cudaSuccess;
}

}  // extern "C"
