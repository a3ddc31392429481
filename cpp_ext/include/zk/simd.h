// Helpers for loops compiled twice: portable, and for AVX2+FMA (see cpu_isa.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "zk/cpu_isa.h"
#include "zk/hd.h"

namespace zk {

// a * b + c: one fused operation where the variant has FMA hardware, else two roundings.
template <bool Fma>
ZK_ALWAYS_INLINE float mac(float a, float b, float c) {
  if constexpr (Fma) return std::fma(a, b, c);
  else return a * b + c;
}

// Fixed-width vectors (GCC/clang vector extensions): W floats / W int32.
template <int W>
struct VecTypes {
  typedef float f __attribute__((vector_size(W * 4)));
  typedef int32_t i __attribute__((vector_size(W * 4)));
};
template <int W>
using Vf = typename VecTypes<W>::f;
template <int W>
using Vi = typename VecTypes<W>::i;

template <int W>
ZK_ALWAYS_INLINE Vf<W> load(const float* p) {
  Vf<W> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W>
ZK_ALWAYS_INLINE void store(float* p, const Vf<W>& v) {
  std::memcpy(p, &v, sizeof v);
}

}  // namespace zk

// Variants whose `a * b + c` on vector types may fuse (they opt back into contraction).
#if ZK_X86_DISPATCH && defined(__GNUC__) && !defined(__clang__)
#define ZK_FUSED_AVX2 __attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
#define ZK_FUSED_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"), optimize("fp-contract=fast")))
#else
#define ZK_FUSED_AVX2 ZK_TARGET_AVX2
#define ZK_FUSED_AVX512 ZK_TARGET_AVX512
#endif

// Defines `name_generic`, `name_avx2` and `name_avx512` from `name_impl<Fma>` and a
// `name_pick()` returning the variant for this CPU.
#define ZK_VARIANTS(name, params, args)                                      \
  void name##_generic params { name##_impl<false> args; }                    \
  ZK_TARGET_AVX2 void name##_avx2 params { name##_impl<true> args; }         \
  ZK_TARGET_AVX512 void name##_avx512 params { name##_impl<true> args; }     \
  using name##_fn = void(*) params;                                          \
  inline name##_fn name##_pick() {                                           \
    switch (::zk::cpu_isa()) {                                               \
      case ::zk::Isa::avx512: return name##_avx512;                          \
      case ::zk::Isa::avx2: return name##_avx2;                              \
      default: return name##_generic;                                        \
    }                                                                        \
  }
