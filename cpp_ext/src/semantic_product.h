// The class product of semantic_inference on tiles of output pixels (CPU):
// scores[c][x] = sum_q P[q][c] * S[q][x], its calibration and argmax.
#pragma once
#include <cstdint>

namespace zk {

constexpr int64_t kTile = 32;  // output pixels per product tile; S rows are padded to a multiple

// Dense: scores (optional) and labels (optional) of n pixels. S is [Q][ss] with a zero tail
// past n, Pt the probabilities transposed to [K][Q], cal K offsets or null.
using product_fn = void (*)(const float* S, int64_t ss, const float* Pt, int64_t Q, int64_t K, int64_t n,
                            const float* cal, float* scores, int64_t plane, int32_t* labels);
product_fn product_pick();

// Labels only, skipping per tile the queries whose sigmoid stays <= tau: their contribution
// to class c lies in [0, max skipped sigmoid * sum of their P[q][c]] (probabilities must be
// >= 0). A pixel whose best lower bound beats every other class's upper bound is decided;
// the others get the skipped queries added. Tiles with mostly active queries use the dense
// product.
struct BoundedLabels {
  const float* S;
  int64_t ss;
  const float* Pt;      // [K][Q]
  const float* P;       // [Q][K]
  const float* totals;  // [K]: sum over q of P[q][c]
  int64_t Q, K, n;
  const float* cal;
  float tau;
  int32_t* labels;
  int32_t* active;   // scratch [Q]
  int32_t* skipped;  // scratch [Q]
  float* rest;       // scratch [K]
  float* lower;      // scratch [K][kTile]
  float* full;       // scratch [K]
};
using bounded_labels_fn = void (*)(const BoundedLabels& a);
bounded_labels_fn bounded_labels_pick();

}  // namespace zk
