// The official box of a query's binary mask, found on the low-resolution logit grid: a
// cell whose four logits are all <= 0 is off everywhere, all clearly above 0 on everywhere;
// only the mixed cells that could grow the box are evaluated pixel by pixel.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "zk/resample.h"

namespace zk {

// High-resolution coordinates along one axis, grouped by their first low-resolution tap.
struct AxisMap {
  std::vector<Taps> taps;            // per high-resolution coordinate
  std::vector<int32_t> first, last;  // per low-resolution index (first > last: none)
};

AxisMap make_axis_map(int64_t low, int64_t high);

// Rows and columns of the mask pixels found so far.
struct Extent {
  int64_t ymin = INT64_MAX, ymax = -1, xmin = INT64_MAX, xmax = -1;
  void add(int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
    ymin = std::min(ymin, y0);
    ymax = std::max(ymax, y1);
    xmin = std::min(xmin, x0);
    xmax = std::max(xmax, x1);
  }
  bool covers(int64_t y0, int64_t y1, int64_t x0, int64_t x1) const {
    return y0 >= ymin && y1 <= ymax && x0 >= xmin && x1 <= xmax;
  }
  bool empty() const { return ymax < 0; }
};

// Extent of the binary mask (upsampled logits >= threshold); cls: scratch of h * w cells.
Extent mask_extent(const float* L, int64_t h, int64_t w, const AxisMap& rows, const AxisMap& cols, float threshold,
                   uint8_t* cls);

// The official box (x0, y0, x1, y1): inclusive last row/column; an empty mask or zero area
// falls back to the exclusive (0, 0, W, H).
void official_box(const Extent& e, int64_t H, int64_t W, int32_t* box);

}  // namespace zk
