// masked_crops on the CPU: the official "cropmask" without full-resolution masked images.
//
// Per query: the box (mask_box.h), then roi_align written as two sparse passes,
// crop = A · (image ∘ mask) · Bᵀ / count, with mask rows evaluated on demand.
#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "mask_box.h"
#include "zk/ops.h"
#include "zk/parallel.h"
#include "zk/resample.h"
#include "zk/roi.h"
#include "zk/simd.h"

namespace zk {
namespace {

// ---- hot loops, compiled for the portable and the AVX2+FMA variant ----

// Horizontal pass of the upsample for one low-resolution row, over some columns.
template <bool Fma>
ZK_ALWAYS_INLINE void hz_row_impl(const float* lrow, const Taps* taps, int64_t n, float* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = std::fma(lrow[taps[k].i0], taps[k].w0, lrow[taps[k].i1] * taps[k].w1);
}
ZK_VARIANTS(hz_row, (const float* lrow, const Taps* taps, int64_t n, float* out), (lrow, taps, n, out))

// Vertical pass and threshold: one row of the binary mask.
template <bool Fma>
ZK_ALWAYS_INLINE void mask_row_impl(const float* t0, const float* t1, float h0, float h1, float thr, int64_t n,
                                    uint8_t* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = std::fma(t0[k], h0, t1[k] * h1) >= thr;
}
ZK_VARIANTS(mask_row, (const float* t0, const float* t1, float h0, float h1, float thr, int64_t n, uint8_t* out),
            (t0, t1, h0, h1, thr, n, out))

// dst[c][k] += w * src[c][k] where mask[k] is on, for every channel c.
template <bool Fma>
ZK_ALWAYS_INLINE void vertical_impl(float w, const uint8_t* mask, const float* src, int64_t src_plane, float* dst,
                                    int64_t dst_plane, int64_t channels, int64_t n, float* wm) {
  for (int64_t k = 0; k < n; ++k) wm[k] = mask[k] ? w : 0.f;
  for (int64_t c = 0; c < channels; ++c) {
    const float* s = src + c * src_plane;
    float* d = dst + c * dst_plane;
    for (int64_t k = 0; k < n; ++k) d[k] = mac<Fma>(wm[k], s[k], d[k]);
  }
}
ZK_VARIANTS(vertical,
            (float w, const uint8_t* mask, const float* src, int64_t src_plane, float* dst, int64_t dst_plane,
             int64_t channels, int64_t n, float* wm),
            (w, mask, src, src_plane, dst, dst_plane, channels, n, wm))

// out[c][p] = (sum over the taps of bin p of weight * rows[c][index]) / count, for every channel.
template <bool Fma>
ZK_ALWAYS_INLINE void horizontal_impl(const float* rows, int64_t row_stride, int64_t channels, const int32_t* off,
                                      const int32_t* idx, const float* wt, int64_t bins, float count, float* out,
                                      int64_t out_stride) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* r = rows + c * row_stride;
    float* o = out + c * out_stride;
    for (int64_t p = 0; p < bins; ++p) {
      float acc = 0.f;
      for (int32_t k = off[p]; k < off[p + 1]; ++k) acc = mac<Fma>(wt[k], r[idx[k]], acc);
      o[p] = acc / count;
    }
  }
}
ZK_VARIANTS(horizontal,
            (const float* rows, int64_t row_stride, int64_t channels, const int32_t* off, const int32_t* idx,
             const float* wt, int64_t bins, float count, float* out, int64_t out_stride),
            (rows, row_stride, channels, off, idx, wt, bins, count, out, out_stride))

struct Kernels {
  hz_row_fn hz_row = hz_row_pick();
  mask_row_fn mask_row = mask_row_pick();
  vertical_fn vertical = vertical_pick();
  horizontal_fn horizontal = horizontal_pick();
};

// ---- crop ----

struct Problem {
  const CropProblem& p;
  AxisMap rows, cols;
  Kernels k;
};


// roi_align samples of one axis as a sparse matrix: bin p uses pixels idx[off[p]..off[p+1]).
struct Sparse {
  std::vector<int32_t> off, idx;
  std::vector<float> wt;
  int32_t lo = INT32_MAX, hi = -1;
};

// Adds weight to pixel `index` in the current bin (taps from `first` on), merging repeats:
// consecutive samples share pixels, so a bin has about grid + 1 taps instead of 2 * grid.
void add_tap(Sparse& sp, int32_t first, int32_t index, float weight) {
  for (size_t k = sp.idx.size(); k-- > static_cast<size_t>(first);) {
    if (sp.idx[k] == index) {
      sp.wt[k] += weight;
      return;
    }
    if (sp.idx[k] < index) break;  // indices grow within a bin
  }
  sp.idx.push_back(index);
  sp.wt.push_back(weight);
}

void build_sparse(const RoiAxis& a, int64_t bins, int64_t size, Sparse& sp) {
  sp.off.assign(bins + 1, 0);
  sp.idx.clear();
  sp.wt.clear();
  sp.lo = INT32_MAX, sp.hi = -1;
  for (int64_t p = 0; p < bins; ++p) {
    for (int i = 0; i < a.grid; ++i) {
      const AxisSample s = axis_sample(roi_coord(a, p, i), size);
      if (!s.valid) continue;
      add_tap(sp, sp.off[p], s.lo, s.wlo);
      add_tap(sp, sp.off[p], s.hi, s.whi);
      sp.lo = std::min(sp.lo, s.lo), sp.hi = std::max(sp.hi, s.hi);
    }
    sp.off[p + 1] = static_cast<int32_t>(sp.idx.size());
  }
}

// Per-thread scratch, reused across queries.
struct Scratch {
  std::vector<uint8_t> cls, mask, mask_ready, hz_ready;
  std::vector<float> hz, tmp, wm;
  std::vector<int32_t> local;
  Sparse ys, xs;
};

// Binary mask rows [r0, r1] x columns [c0, c1] of one query, evaluated when first asked.
class MaskRows {
 public:
  MaskRows(const Problem& P, const float* L, Scratch& s, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
      : P_(P), L_(L), s_(s), r0_(r0), c0_(c0), n_(c1 - c0 + 1) {
    lr0_ = P.rows.taps[r0].i0;
    const int64_t lr1 = P.rows.taps[r1].i1;
    s.hz.resize((lr1 - lr0_ + 1) * n_);
    s.hz_ready.assign(lr1 - lr0_ + 1, 0);
    s.mask.resize((r1 - r0 + 1) * n_);
    s.mask_ready.assign(r1 - r0 + 1, 0);
  }

  const uint8_t* row(int64_t y) {
    uint8_t* out = s_.mask.data() + (y - r0_) * n_;
    if (!s_.mask_ready[y - r0_]) {
      const Taps& t = P_.rows.taps[y];
      P_.k.mask_row(hz(t.i0), hz(t.i1), t.w0, t.w1, P_.p.threshold, n_, out);
      s_.mask_ready[y - r0_] = 1;
    }
    return out;
  }

 private:
  const float* hz(int64_t lr) {
    float* out = s_.hz.data() + (lr - lr0_) * n_;
    if (!s_.hz_ready[lr - lr0_]) {
      P_.k.hz_row(L_ + lr * P_.p.w, P_.cols.taps.data() + c0_, n_, out);
      s_.hz_ready[lr - lr0_] = 1;
    }
    return out;
  }

  const Problem& P_;
  const float* L_;
  Scratch& s_;
  int64_t r0_, c0_, n_, lr0_;
};

void crop_query(const Problem& P, const float* image, const float* L, const int32_t* box, Scratch& s, float* out) {
  const CropProblem& p = P.p;
  const int64_t S = p.S, plane = p.H * p.W;
  const RoiAxis ay = roi_axis(box[1], box[3], S, p.sampling_ratio);
  const RoiAxis ax = roi_axis(box[0], box[2], S, p.sampling_ratio);
  const float count = static_cast<float>(std::max(ay.grid * ax.grid, 1));
  build_sparse(ay, S, p.H, s.ys);
  build_sparse(ax, S, p.W, s.xs);
  if (s.ys.hi < 0 || s.xs.hi < 0) {
    std::fill(out, out + p.C * S * S, 0.f);
    return;
  }
  const int64_t c0 = s.xs.lo, n = s.xs.hi - s.xs.lo + 1;
  MaskRows mask(P, L, s, s.ys.lo, s.ys.hi, c0, s.xs.hi);
  s.tmp.assign(p.C * S * n, 0.f);
  s.wm.resize(n);
  for (int64_t ph = 0; ph < S; ++ph) {
    for (int32_t k = s.ys.off[ph]; k < s.ys.off[ph + 1]; ++k) {
      if (s.ys.wt[k] == 0.f) continue;
      const int64_t y = s.ys.idx[k];
      P.k.vertical(s.ys.wt[k], mask.row(y), image + y * p.W + c0, plane, s.tmp.data() + ph * n, S * n, p.C, n,
                   s.wm.data());
    }
  }
  s.local.resize(s.xs.idx.size());
  for (size_t k = 0; k < s.local.size(); ++k) s.local[k] = static_cast<int32_t>(s.xs.idx[k] - c0);
  for (int64_t ph = 0; ph < S; ++ph)
    P.k.horizontal(s.tmp.data() + ph * n, S * n, p.C, s.xs.off.data(), s.local.data(), s.xs.wt.data(), S, count,
                   out + ph * S, S * S);
}

void run_query(const Problem& P, int64_t item, const float* image, const float* logits, float* crops,
               int32_t* boxes, Scratch& s) {
  const CropProblem& p = P.p;
  const int64_t b = item / p.Q;
  const float* L = logits + item * p.h * p.w;
  int32_t* box = boxes + item * 4;
  float* out = crops + item * p.C * p.S * p.S;
  s.cls.resize(p.h * p.w);
  const Extent e = mask_extent(L, p.h, p.w, P.rows, P.cols, p.threshold, s.cls.data());
  official_box(e, p.H, p.W, box);
  if (e.empty()) {  // masked image is all zeros, and so is every roi_align sample
    std::fill(out, out + p.C * p.S * p.S, 0.f);
    return;
  }
  crop_query(P, image + b * p.C * p.H * p.W, L, box, s, out);
}

}  // namespace

void masked_crops_cpu(const CropProblem& p, const float* image, const float* logits, float* crops, int32_t* boxes) {
  const Problem P{p, make_axis_map(p.h, p.H), make_axis_map(p.w, p.W), Kernels{}};
  const int threads = resolve_threads(p.threads);
  std::vector<Scratch> scratch(threads);
  parallel_chunks(p.B * p.Q, 1, threads, [&](int tid, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) run_query(P, item, image, logits, crops, boxes, scratch[tid]);
  });
}

}  // namespace zk
