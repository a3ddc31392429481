#include <cmath>
#include <cstdint>
#include <cstring>

#include "zk/sigmoid.h"

namespace zk {
namespace {

bool sigmoid_above_half(float x) {
  volatile float e = std::exp(-x);  // volatile: evaluate with the run-time libm, like torch
  return 1.0f / (1.0f + e) > 0.5f;
}

float search_threshold() {
  // Binary search over the bit patterns of non-negative floats (monotone in the value).
  int32_t lo = 0, hi = 0x3f800000;  // sigmoid(0) == 0.5 is off, sigmoid(1) is on
  while (hi - lo > 1) {
    const int32_t mid = lo + (hi - lo) / 2;
    float x;
    std::memcpy(&x, &mid, sizeof x);
    if (sigmoid_above_half(x)) hi = mid; else lo = mid;
  }
  float x;
  std::memcpy(&x, &hi, sizeof x);
  return x;
}

}  // namespace

float mask_on_threshold() {
  static const float threshold = search_threshold();
  return threshold;
}

}  // namespace zk
