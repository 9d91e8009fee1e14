// Argument checks shared by the dispatch functions of every op family, so that the CPU and
// CUDA implementations may assume valid shapes, strides and devices.
#pragma once
#include <initializer_list>

#include "tensor/tensor.h"

namespace trick {

// All defined tensors are on the same device; returns it.
Device check_same_device(const char* op, std::initializer_list<const Tensor*> ts);
void check_defined(const char* op, const char* name, const Tensor& t);
void check_row_strided(const char* op, const char* name, const Tensor& t);
void check_contiguous(const char* op, const char* name, const Tensor& t);
void check_shape(const char* op, const char* name, const Tensor& t, const Shape& want);
void check_same_shape(const char* op, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b);
void check_ndim(const char* op, const char* name, const Tensor& t, int ndim);

// A CUDA tensor reached a build without CUDA (only possible through misuse).
[[noreturn]] void no_cuda(const char* op);

}  // namespace trick

// Calls cpu::fn or cuda::fn on the device `dev`. (A macro because the CUDA branch must
// vanish from builds without CUDA.)
// TRICK_CUDA_KERNELS: set in CMakeLists.txt once kernels/cuda/ has every op's CUDA twin.
#if defined(TRICK_WITH_CUDA) && defined(TRICK_CUDA_KERNELS)
#define TRICK_DISPATCH(op, dev, fn, ...) ((dev).is_cuda() ? cuda::fn(__VA_ARGS__) : cpu::fn(__VA_ARGS__))
#else
#define TRICK_DISPATCH(op, dev, fn, ...) ((dev).is_cuda() ? ::trick::no_cuda(op) : cpu::fn(__VA_ARGS__))
#endif
