#include "mask_box.h"

#include <algorithm>
#include <climits>

namespace zk {
namespace {

// A cell whose four logits are all >= this is on everywhere: the bilinear value is a
// convex combination, within a few ulp of at least this, far above the threshold (~9e-8).
constexpr float kOnMargin = 1e-6f;
enum : uint8_t { kOff = 0, kOn = 1, kMixed = 2 };

void classify_cells(const float* L, int64_t h, int64_t w, uint8_t* cls) {
  for (int64_t i = 0; i < h; ++i) {
    const float* r0 = L + i * w;
    const float* r1 = L + (i + 1 < h ? i + 1 : i) * w;
    for (int64_t j = 0; j < w; ++j) {
      const int64_t j1 = j + 1 < w ? j + 1 : j;
      const float mn = std::min(std::min(r0[j], r0[j1]), std::min(r1[j], r1[j1]));
      const float mx = std::max(std::max(r0[j], r0[j1]), std::max(r1[j], r1[j1]));
      cls[i * w + j] = mx <= 0.f ? kOff : (mn >= kOnMargin ? kOn : kMixed);
    }
  }
}

}  // namespace

AxisMap make_axis_map(int64_t low, int64_t high) {
  AxisMap m;
  m.taps.resize(high);
  m.first.assign(low, INT32_MAX);
  m.last.assign(low, -1);
  for (int64_t d = 0; d < high; ++d) {
    const Taps t = linear_taps(d, low, high);
    m.taps[d] = t;
    m.first[t.i0] = std::min<int32_t>(m.first[t.i0], static_cast<int32_t>(d));
    m.last[t.i0] = std::max<int32_t>(m.last[t.i0], static_cast<int32_t>(d));
  }
  return m;
}

// On cells first, then only the mixed cells that could grow the extent.
Extent mask_extent(const float* L, int64_t h, int64_t w, const AxisMap& R, const AxisMap& Cm, float threshold,
                   uint8_t* cls) {
  classify_cells(L, h, w, cls);
  Extent e;
  for (int64_t i = 0; i < h; ++i) {
    if (R.first[i] > R.last[i]) continue;
    for (int64_t j = 0; j < w; ++j)
      if (cls[i * w + j] == kOn && Cm.first[j] <= Cm.last[j]) e.add(R.first[i], R.last[i], Cm.first[j], Cm.last[j]);
  }
  for (int64_t i = 0; i < h; ++i) {
    if (R.first[i] > R.last[i]) continue;
    for (int64_t j = 0; j < w; ++j) {
      if (cls[i * w + j] != kMixed || Cm.first[j] > Cm.last[j]) continue;
      if (e.covers(R.first[i], R.last[i], Cm.first[j], Cm.last[j])) continue;
      for (int64_t y = R.first[i]; y <= R.last[i]; ++y)
        for (int64_t x = Cm.first[j]; x <= Cm.last[j]; ++x) {
          if (e.covers(y, y, x, x)) continue;
          if (bilinear_at(L, w, R.taps[y], Cm.taps[x]) >= threshold) e.add(y, y, x, x);
        }
    }
  }
  return e;
}

// Official quirks: the maximum is inclusive, the zero-area fallback exclusive.
void official_box(const Extent& e, int64_t H, int64_t W, int32_t* box) {
  if (e.empty() || (e.ymax - e.ymin) * (e.xmax - e.xmin) == 0) {
    box[0] = 0, box[1] = 0, box[2] = static_cast<int32_t>(W), box[3] = static_cast<int32_t>(H);
    return;
  }
  box[0] = static_cast<int32_t>(e.xmin), box[1] = static_cast<int32_t>(e.ymin);
  box[2] = static_cast<int32_t>(e.xmax), box[3] = static_cast<int32_t>(e.ymax);
}

}  // namespace zk
