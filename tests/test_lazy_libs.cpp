// cuBLAS and cuDNN loaded on first use (kernels/cuda/lazy_libs.h): the binaries do not link
// them (nor the shared CUDA runtime), the installed libraries export every function trick
// forwards to, and a library that cannot be loaded is one clear error. No GPU needed.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tensor/error.h"
#include "tests/test_util.h"

#ifdef TRICK_WITH_CUDA
#include "kernels/cuda/lazy_libs.h"
#endif

namespace trick::test_lazy_libs {
namespace {

using trick_test::contains;
using trick_test::run_capture;

#ifdef TRICK_WITH_CUDA

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += " " + n;
  return out;
}

TEST_CASE("cuda: cuBLAS and cuDNN are not linked, load on first use, and export every function trick calls (host)") {
  // What the dynamic loader must find before main: no CUDA library (the runtime is linked in).
  for (const std::string& bin : {std::string(TRICK_BINARY), std::string("/proc/self/exe")}) {
    int status = 0;
    const std::string dynamic = run_capture("readelf -d '" + bin + "' 2>&1", &status);
    REQUIRE_MESSAGE(status == 0, dynamic);
    CHECK(contains(dynamic, "(NEEDED)"));
    for (const char* lib : {"libcublas", "libcudnn", "libcudart", "libcuda.so"})
      CHECK_MESSAGE(!contains(dynamic, lib), bin << " needs " << lib << " to start:\n" << dynamic);
  }
  // A CUDA build found both at build time, so they load here; every forwarded name resolves
  // (a misspelt or versioned name, cublasCreate against cublasCreate_v2, would not).
  struct Case {
    cuda::LazyLibrary& lib;
    const std::vector<const char*>& names;
    const char* file;
  };
  std::vector<Case> cases{Case{cuda::cublas_library(), cuda::cublas_functions(), "libcublas.so."}};
#ifdef TRICK_WITH_CUDNN
  cases.push_back(Case{cuda::cudnn_library(), cuda::cudnn_functions(), "libcudnn.so."});
#endif
  for (const Case& c : cases) {
    CAPTURE(c.lib.name());
    REQUIRE_MESSAGE(c.lib.loaded(), c.lib.error());
    CHECK(c.lib.error().empty());
    CHECK(contains(c.lib.path(), c.file));
    const std::vector<std::string> missing = cuda::missing_functions(c.lib, c.names);
    CHECK_MESSAGE(missing.empty(), "not exported by " << c.lib.path() << ":" << joined(missing));
  }
  // That every function called has a forwarder needs no test: without one the link fails,
  // since nothing else defines it.
  // `trick info` says which files it would load.
  int status = 0;
  const std::string info = run_capture(std::string(TRICK_BINARY) + " info 2>&1", &status);
  CHECK(status == 0);
  CHECK_MESSAGE(contains(info, cuda::cublas_library().path()), info);
#ifdef TRICK_WITH_CUDNN
  CHECK_MESSAGE(contains(info, cuda::cudnn_library().path()), info);
#else
  CHECK_MESSAGE(contains(info, "this build has none"), info);
#endif
}

#ifndef TRICK_WITH_CUDNN
TEST_CASE("cuda: a build without cuDNN's header says so for --conv cudnn (host)") {
  // CMake found no cudnn.h (or -DTRICK_CUDNN=OFF): nothing to load, and the error says why.
  cuda::LazyLibrary& lib = cuda::cudnn_library();
  CHECK_FALSE(lib.loaded());
  CHECK(cuda::cudnn_functions().empty());
  std::string message;
  try {
    lib.require();
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK_MESSAGE(contains(message,
                         "cuDNN (--conv cudnn) cannot be loaded: this build has none; CMake found no "
                         "cudnn.h when trick was built: install cuDNN 9 with its headers and build trick "
                         "again; --conv own and --conv cublas need no cuDNN"),
                message);
}
#endif

TEST_CASE("cuda: a library that cannot be loaded is one error naming it, every place looked and what to do (host)") {
  cuda::LazyLibrary lib("libnothing (--conv nothing)", {"libtrick-no-such.so.1", "/nonexistent/libtrick-no-such.so.1"},
                        "install it");
  CHECK_FALSE(lib.loaded());
  CHECK(lib.symbol("cublasCreate_v2") == nullptr);
  CHECK(lib.path().empty());
  CHECK(cuda::missing_functions(lib, cuda::cublas_functions()).empty());  // nothing loaded, nothing to list
  std::string message;
  try {
    lib.require();
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK(contains(message, "libnothing (--conv nothing) cannot be loaded: "));
  CHECK(contains(message, "libtrick-no-such.so.1: cannot open shared object file"));
  CHECK(contains(message, "/nonexistent/libtrick-no-such.so.1: cannot open shared object file"));
  CHECK(contains(message, "; install it"));
  CHECK(lib.error() + "; install it" == message.substr(message.find(": ") + 2));
}

#else

TEST_CASE("cuda: cuBLAS and cuDNN are not linked, load on first use, and export every function trick calls (host)") {
  MESSAGE("skipped: this build has no CUDA support (-DTRICK_CUDA=OFF or no nvcc)");
}

#endif

}  // namespace
}  // namespace trick::test_lazy_libs
