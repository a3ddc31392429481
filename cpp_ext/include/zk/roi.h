// torchvision.ops.roi_align(aligned=True, spatial_scale=1) geometry, float for float
// as torchvision's CPU/CUDA kernels compute it (no fused multiply-adds).
#pragma once
#include <cmath>
#include <cstdint>

#include "zk/hd.h"

namespace zk {

// One axis of a box: [lo, hi] in pixel indices, crop size S.
struct RoiAxis {
  float start, bin;  // first sample origin and bin size
  int grid;          // samples per bin along this axis
};

ZK_HD RoiAxis roi_axis(int32_t lo, int32_t hi, int64_t S, int sampling_ratio) {
  // aligned=True shifts the box by half a pixel; its extent is not clamped to >= 1.
  const float start = static_cast<float>(lo) * 1.0f - 0.5f;
  const float end = static_cast<float>(hi) * 1.0f - 0.5f;
  const float extent = end - start;
  RoiAxis a;
  a.start = start;
  a.bin = extent / static_cast<float>(S);
  a.grid = sampling_ratio > 0 ? sampling_ratio : static_cast<int>(ceilf(extent / static_cast<float>(S)));
  return a;
}

// Coordinate of sample i of bin p.
ZK_HD float roi_coord(const RoiAxis& a, int64_t p, int i) {
  return a.start + static_cast<float>(p) * a.bin +
         static_cast<float>(i + .5f) * a.bin / static_cast<float>(a.grid);
}

// Bilinear neighbours of a sample coordinate with torchvision's border rules:
// outside [-1, size] the sample is zero; below 0 it clamps to 0; at the last pixel both
// neighbours are that pixel.
struct AxisSample {
  int32_t lo, hi;
  float wlo, whi;
  bool valid;
};

ZK_HD AxisSample axis_sample(float c, int64_t size) {
  AxisSample s;
  if (c < -1.0f || c > static_cast<float>(size)) {
    s.lo = s.hi = 0;
    s.wlo = s.whi = 0.f;
    s.valid = false;
    return s;
  }
  if (c <= 0.f) c = 0.f;
  int32_t lo = static_cast<int32_t>(c);
  int32_t hi;
  if (lo >= size - 1) {
    hi = lo = static_cast<int32_t>(size - 1);
    c = static_cast<float>(lo);
  } else {
    hi = lo + 1;
  }
  const float l = c - static_cast<float>(lo);
  s.lo = lo;
  s.hi = hi;
  s.whi = l;
  s.wlo = 1.f - l;
  s.valid = true;
  return s;
}

}  // namespace zk
