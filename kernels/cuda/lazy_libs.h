// cuBLAS and cuDNN, loaded when first used instead of linked.
//
// Linked, they cost every run of a CUDA build, GPU or not: libcublasLt's start-up alone took
// about 0.3 s and 140 MB of `trick --version`'s 0.45 s and 227 MB on the development machine,
// and the binary did not start at all where the libraries are missing (a copy on a machine
// with no CUDA toolkit), before trick could say "no usable CUDA device; running on the CPU".
// Now only `--conv cublas` / `--conv cudnn` (and tests of them) load them, and the CUDA
// runtime is linked statically, so a CUDA build starts anywhere the CPU build does.
//
// kernels/cuda/lazy_libs.cpp defines the cuBLAS and cuDNN functions trick calls, under their
// own names and with the headers' exact signatures (a mismatch does not compile), each
// forwarding to the library's function found with dlsym. Call sites are unchanged.
#pragma once
#include <string>
#include <vector>

namespace trick {
namespace cuda {

class LazyLibrary {
 public:
  // what: "cuBLAS"; candidates: file names tried in turn with dlopen (a bare soname first, so
  // LD_LIBRARY_PATH and the system's library cache decide, then the build machine's folder);
  // hint: what to tell a user it cannot be loaded for. No candidates: a library this build
  // cannot use (its error() is `absent`, and the hint says what to do).
  LazyLibrary(std::string what, std::vector<std::string> candidates, std::string hint,
              std::string absent = "this build has none");
  LazyLibrary(const LazyLibrary&) = delete;
  LazyLibrary& operator=(const LazyLibrary&) = delete;

  const std::string& name() const { return what_; }
  // Loads it on the first call (thread-safe); nullptr when no candidate loads.
  void* handle();
  bool loaded() { return handle() != nullptr; }
  // Throws Error "<what> cannot be loaded: <each candidate's dlerror>; <hint>" unless loaded.
  void require();
  // The loaded file's full path, or "" when not loaded.
  std::string path();
  // Why it cannot be loaded (each candidate's dlerror), or "" when it is loaded.
  std::string error();
  // The library's function `name`, or nullptr (library or symbol missing).
  void* symbol(const char* name);

 private:
  std::string what_, hint_, absent_;
  std::vector<std::string> candidates_;
  void* handle_ = nullptr;
  std::string error_;
  bool tried_ = false;
};

LazyLibrary& cublas_library();
LazyLibrary& cudnn_library();

// The names of the functions trick calls in each library, and those of them the loaded
// library does not export (empty when it has them all, or is not loaded): for the test that
// the forwarding table matches the installed libraries.
const std::vector<const char*>& cublas_functions();
const std::vector<const char*>& cudnn_functions();
std::vector<std::string> missing_functions(LazyLibrary& lib, const std::vector<const char*>& names);

}  // namespace cuda
}  // namespace trick
