// TRICK_HD: a function compiled for both the host and the GPU under nvcc (__host__ __device__,
// inlined), a plain inline function elsewhere; for the index math and roundings that the
// kernels use and the tests replay on the host.
#pragma once

#if defined(__CUDACC__)
#define TRICK_HD __host__ __device__ __forceinline__
#else
#define TRICK_HD inline
#endif
