// Logistic function and the official mask threshold.
#pragma once
#include <cstdint>
#include <cstring>

#include "zk/hd.h"

namespace zk {

ZK_HD float bits_to_float(int32_t i) {
#ifdef __CUDA_ARCH__
  return __int_as_float(i);
#else
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
#endif
}

// exp(x) for x in [-87, 87]: Cody-Waite reduction and a degree-6 polynomial (about 1 ulp).
// Branch-free so that compilers vectorise it; identical arithmetic on CPU and GPU.
ZK_HD float exp_small(float x) {
  const float magic = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504f + magic;
  const float n = t - magic;
  float r = x - n * 0.693145752f;
  r = r - n * 1.42860677e-6f;
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t e = static_cast<int32_t>(n) + 127;
  return p * bits_to_float(e << 23);
}

// 1 / (1 + exp(-x)), within a few ulp of the float32 logistic.
ZK_HD float sigmoid(float x) {
  float m = -x;
  m = m < -87.f ? -87.f : (m > 87.f ? 87.f : m);
  return 1.f / (1.f + exp_small(m));
}

// Smallest float x with float32 1/(1+expf(-x)) > 0.5f: a mask pixel is "on" iff its
// upsampled logit is >= this value (the official `sigmoid(x) > 0.5`, which differs
// from x > 0 for tiny positive x where the float32 sigmoid rounds to exactly 0.5).
float mask_on_threshold();

}  // namespace zk
