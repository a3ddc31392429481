// Run-time choice between a portable build of the hot loops and an AVX2+FMA one.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ZK_X86_DISPATCH 1
#define ZK_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define ZK_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#else
#define ZK_X86_DISPATCH 0
#define ZK_TARGET_AVX2
#define ZK_TARGET_AVX512
#endif

namespace zk {

enum class Isa { generic, avx2, avx512 };

// The best instruction set this CPU supports among those compiled in
// (env ZEGFORMER_CPU_ISA=generic|avx2|avx512 caps it).
Isa cpu_isa();
const char* isa_name(Isa isa);

}  // namespace zk
