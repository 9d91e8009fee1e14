#include "tensor/cpu_check.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

namespace trick {

namespace {

// Each instruction set the compiler's target includes, with its run-time probe (which needs a
// string literal, hence a lambda each).
using Probe = bool (*)();
std::vector<std::pair<const char*, Probe>> targeted() {
  std::vector<std::pair<const char*, Probe>> v;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TRICK_ISA(name) v.emplace_back(name, [] { return __builtin_cpu_supports(name) != 0; })
#ifdef __SSE4_2__
  TRICK_ISA("sse4.2");
#endif
#ifdef __POPCNT__
  TRICK_ISA("popcnt");
#endif
#ifdef __AVX__
  TRICK_ISA("avx");
#endif
#ifdef __AVX2__
  TRICK_ISA("avx2");
#endif
#ifdef __FMA__
  TRICK_ISA("fma");
#endif
#ifdef __F16C__
  TRICK_ISA("f16c");
#endif
#ifdef __BMI__
  TRICK_ISA("bmi");
#endif
#ifdef __BMI2__
  TRICK_ISA("bmi2");
#endif
#ifdef __MOVBE__
  TRICK_ISA("movbe");
#endif
#ifdef __ADX__
  TRICK_ISA("adx");
#endif
#ifdef __SHA__
  TRICK_ISA("sha");
#endif
#ifdef __VAES__
  TRICK_ISA("vaes");
#endif
#ifdef __VPCLMULQDQ__
  TRICK_ISA("vpclmulqdq");
#endif
#ifdef __GFNI__
  TRICK_ISA("gfni");
#endif
#ifdef __AVX512F__
  TRICK_ISA("avx512f");
#endif
#ifdef __AVX512CD__
  TRICK_ISA("avx512cd");
#endif
#ifdef __AVX512VL__
  TRICK_ISA("avx512vl");
#endif
#ifdef __AVX512BW__
  TRICK_ISA("avx512bw");
#endif
#ifdef __AVX512DQ__
  TRICK_ISA("avx512dq");
#endif
#ifdef __AVX512VNNI__
  TRICK_ISA("avx512vnni");
#endif
#ifdef __AVX512BF16__
  TRICK_ISA("avx512bf16");
#endif
#ifdef __AVX512VBMI__
  TRICK_ISA("avx512vbmi");
#endif
#ifdef __AVX512IFMA__
  TRICK_ISA("avx512ifma");
#endif
#undef TRICK_ISA
#endif
  return v;
}

}  // namespace

std::vector<std::string> built_cpu_features() {
  std::vector<std::string> out;
  for (const auto& f : targeted()) out.push_back(f.first);
  return out;
}

std::vector<std::string> missing_cpu_features(const std::function<bool(const std::string&)>& supports) {
  std::vector<std::string> out;
  for (const auto& f : targeted())
    if (!supports(f.first)) out.push_back(f.first);
  return out;
}

std::vector<std::string> missing_cpu_features() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();  // may run before the library's own initialisation
#endif
  std::vector<std::string> out;
  for (const auto& f : targeted())
    if (!f.second()) out.push_back(f.first);
  return out;
}

void require_built_cpu_features() {
  const std::vector<std::string> missing = missing_cpu_features();
  if (missing.empty()) return;
  std::string list;
  for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
  std::fprintf(stderr,
               "error: this binary was built for its build machine's CPU (-march=native) and may use %s, which "
               "this CPU lacks: build it on this machine, or configure with -DTRICK_NATIVE=OFF for a binary that "
               "runs on any x86-64 CPU (its AVX2 kernels are chosen at run time)\n",
               list.c_str());
  std::exit(1);
}

}  // namespace trick
