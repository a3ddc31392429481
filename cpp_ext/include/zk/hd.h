// Portability macros shared by the C++ (CPU) and CUDA translation units.
#pragma once

#ifdef __CUDACC__
#define ZK_HD __host__ __device__ __forceinline__
#else
#define ZK_HD inline
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ZK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ZK_ALWAYS_INLINE inline
#endif
