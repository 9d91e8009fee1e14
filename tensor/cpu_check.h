// Refusing, in one line, to run on a CPU that lacks an instruction set the binary was built
// to use. With TRICK_NATIVE (the default) the compiler targets the build machine's CPU
// (-march=native); a copy run on an older CPU would otherwise die of SIGILL at some later
// instruction, with no word of why.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace trick {

// The instruction sets the compiler was allowed to use (by the names GCC's
// __builtin_cpu_supports knows) that `supports` says this CPU lacks; the first form asks the
// CPU. Empty on the build machine, and always for a build with -DTRICK_NATIVE=OFF (x86-64
// baseline; the AVX2 kernels are chosen at run time), or not on x86-64.
std::vector<std::string> missing_cpu_features();
std::vector<std::string> missing_cpu_features(const std::function<bool(const std::string&)>& supports);
// The instruction sets the compiler was allowed to use beyond the x86-64 baseline.
std::vector<std::string> built_cpu_features();

// When missing_cpu_features() is not empty: one "error: ..." line naming them and how to get a
// binary that runs here, and exit code 1. trick and trick_tests call it before anything else
// runs (a constructor of the highest priority in their main files).
void require_built_cpu_features();

}  // namespace trick
