#include "zk/cpu_isa.h"

#include <cstdlib>
#include <cstring>

namespace zk {
namespace {

Isa detect() {
#if ZK_X86_DISPATCH
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  Isa best = avx512 ? Isa::avx512 : (avx2 ? Isa::avx2 : Isa::generic);
  if (const char* cap = std::getenv("ZEGFORMER_CPU_ISA")) {
    if (std::strcmp(cap, "generic") == 0) best = Isa::generic;
    else if (std::strcmp(cap, "avx2") == 0 && best == Isa::avx512) best = Isa::avx2;
  }
  return best;
#else
  return Isa::generic;
#endif
}

}  // namespace

Isa cpu_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace zk
