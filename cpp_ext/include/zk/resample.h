// Bilinear resampling that reproduces torch.nn.functional.interpolate
// (mode="bilinear", align_corners=False, size given) bit for bit.
#pragma once
#include <cmath>
#include <cstdint>

#include "zk/hd.h"

namespace zk {

// Source indices and weights of one output coordinate along one axis.
struct Taps {
  int32_t i0, i1;
  float w0, w1;
};

// torch's compute_indices_weights_linear: scale = in/out in float,
// src = scale * (dst + 0.5) - 0.5 clamped at 0. torch's AVX2/AVX512 kernels contract
// that expression into one fused multiply-add, so we do too.
ZK_HD Taps linear_taps(int64_t dst, int64_t in_size, int64_t out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  float src = fmaf(scale, static_cast<float>(dst) + 0.5f, -0.5f);
  if (src < 0.f) src = 0.f;
  int64_t i0 = static_cast<int64_t>(floorf(src));
  if (i0 > in_size - 1) i0 = in_size - 1;
  const float l1 = fminf(fmaxf(src - static_cast<float>(i0), 0.f), 1.f);
  Taps t;
  t.i0 = static_cast<int32_t>(i0);
  t.i1 = static_cast<int32_t>(i0 < in_size - 1 ? i0 + 1 : i0);
  t.w0 = 1.f - l1;
  t.w1 = l1;
  return t;
}

// torch's generic (non channels-last) kernel: the inner axis first, then the outer one,
// each `t0 * w0 + t1 * w1` contracted to fma(t0, w0, t1 * w1).
ZK_HD float bilinear_at(const float* plane, int64_t width, const Taps& ty, const Taps& tx) {
  const float* r0 = plane + static_cast<int64_t>(ty.i0) * width;
  const float* r1 = plane + static_cast<int64_t>(ty.i1) * width;
  const float t0 = fmaf(r0[tx.i0], tx.w0, r0[tx.i1] * tx.w1);
  const float t1 = fmaf(r1[tx.i0], tx.w0, r1[tx.i1] * tx.w1);
  return fmaf(t0, ty.w0, t1 * ty.w1);
}

// Plain two-tap blend used where bitwise agreement with torch is not required
// (resize of sigmoid values); kept unfused so CPU and GPU round identically.
ZK_HD float blend2(float v0, float w0, float v1, float w1) { return w0 * v0 + w1 * v1; }

}  // namespace zk
