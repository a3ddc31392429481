// semantic_inference on the CPU, fused row by row: nothing of size Q x H x W or K x H x W
// is ever allocated (except the scores the caller asks for).
//
// Two orders, equal up to rounding (a resize of a weighted sum is the weighted sum of
// the resizes):
//  - usually: resize the sigmoid masks to the output row, then the class product per
//    output pixel;
//  - output much larger (upscaling, many queries): class scores at image resolution for
//    the rows needed (two cached), then resize the scores.
#include <algorithm>
#include <cmath>
#include <vector>

#include "zk/ops.h"
#include "zk/parallel.h"
#include "zk/resample.h"
#include "zk/sigmoid.h"
#include "zk/simd.h"
#include "semantic_product.h"

namespace zk {
namespace {

constexpr int64_t kRowsPerChunk = 8;

int64_t padded(int64_t n) { return (n + kTile - 1) / kTile * kTile; }

// ---- hot loops ----

template <bool Fma>
ZK_ALWAYS_INLINE void hz_impl(const float* lrow, const Taps* taps, int64_t n, float* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = mac<Fma>(lrow[taps[k].i0], taps[k].w0, lrow[taps[k].i1] * taps[k].w1);
}
ZK_VARIANTS(hz, (const float* lrow, const Taps* taps, int64_t n, float* out), (lrow, taps, n, out))

// out = sigmoid(t0 * h0 + t1 * h1), or out += wt * sigmoid(...) when accumulate.
template <bool Fma>
ZK_ALWAYS_INLINE void sig_impl(const float* t0, const float* t1, float h0, float h1, float wt, bool accumulate,
                               int64_t n, float* out) {
  if (accumulate) {
    for (int64_t k = 0; k < n; ++k) out[k] = out[k] + wt * sigmoid(mac<Fma>(t0[k], h0, t1[k] * h1));
  } else {
    for (int64_t k = 0; k < n; ++k) out[k] = wt * sigmoid(mac<Fma>(t0[k], h0, t1[k] * h1));
  }
}
ZK_VARIANTS(sig, (const float* t0, const float* t1, float h0, float h1, float wt, bool accumulate, int64_t n, float* out),
            (t0, t1, h0, h1, wt, accumulate, n, out))

// out[x] = v[i0[x]] * w0[x] + v[i1[x]] * w1[x]
template <bool Fma>
ZK_ALWAYS_INLINE void gather_impl(const float* v, const Taps* taps, int64_t n, float* out) {
  for (int64_t x = 0; x < n; ++x) out[x] = blend2(v[taps[x].i0], taps[x].w0, v[taps[x].i1], taps[x].w1);
}
ZK_VARIANTS(gather, (const float* v, const Taps* taps, int64_t n, float* out), (v, taps, n, out))

// One output row from two rows of image-resolution scores (upscaling order): the rows are
// blended first (contiguous), then each output column gathers its two taps.
template <bool Fma>
ZK_ALWAYS_INLINE void resize_row_impl(const float* A, const float* B, float a0, float a1, int64_t stride, int64_t K,
                                      int64_t iw, const Taps* rx, int64_t ow, const float* cal, float* scores,
                                      int64_t plane, float* tmp, float* best, int32_t* labels) {
  for (int64_t x = 0; x < ow; ++x) best[x] = -INFINITY, labels[x] = 0;
  for (int64_t c = 0; c < K; ++c) {
    const float* ra = A + c * stride;
    const float* rb = B + c * stride;
    for (int64_t x = 0; x < iw; ++x) tmp[x] = blend2(ra[x], a0, rb[x], a1);
    const float off = cal ? cal[c] : 0.f;
    for (int64_t x = 0; x < ow; ++x) {
      const Taps t = rx[x];
      const float v = blend2(tmp[t.i0], t.w0, tmp[t.i1], t.w1) - off;
      if (scores) scores[c * plane + x] = v;
      if (v > best[x]) best[x] = v, labels[x] = static_cast<int32_t>(c);
    }
  }
}
ZK_VARIANTS(resize_row,
            (const float* A, const float* B, float a0, float a1, int64_t stride, int64_t K, int64_t iw, const Taps* rx,
             int64_t ow, const float* cal, float* scores, int64_t plane, float* tmp, float* best, int32_t* labels),
            (A, B, a0, a1, stride, K, iw, rx, ow, cal, scores, plane, tmp, best, labels))

struct Kernels {
  hz_fn hz = hz_pick();
  sig_fn sig = sig_pick();
  gather_fn gather = gather_pick();
  product_fn product = product_pick();
  bounded_labels_fn bounded = bounded_labels_pick();
  resize_row_fn resize_row = resize_row_pick();
};

// Queries whose sigmoid stays at most this over a tile are bounded, not multiplied out,
// when only labels are wanted (see semantic_product.h).
constexpr float kSkipBelow = 1e-3f;

// Geometry shared by all batch items.
struct Plan {
  const SemanticProblem& p;
  std::vector<Taps> ty, ry, rx;  // padded rows (h->H), output rows (ih->oh), output cols (iw->ow)
  std::vector<int32_t> cols;     // image columns that the sigmoid rows are evaluated at
  std::vector<Taps> col_taps;    // their upsampling taps (w->W)
  std::vector<Taps> out_taps;    // rx re-indexed into `cols` (output-resolution order)
  bool identity_cols;            // cols == output columns one to one
  bool upscale;
  bool bounded;                  // labels-only products may skip queries (probabilities >= 0)
  Kernels k;
};

// One batch item's inputs.
struct Batch {
  int64_t b;
  const float* logits;  // [Q][h][w]
  const float* probs;   // [Q][K]
  const float* Pt;      // [K][Q]
  const float* totals;  // [K]
  const float* cal;     // [K] or null
};

// Class product per output pixel (about Q/16 vector operations each) against the product at
// image resolution plus a K-channel resize (about 4 scalar operations per class and pixel).
bool prefer_upscale_order(const SemanticProblem& p) {
  const double out = static_cast<double>(p.oh) * p.ow, in = static_cast<double>(p.ih) * p.iw;
  return out * (p.Q / 16.0 - 4.0) > in * (p.Q / 16.0);
}

Plan make_plan(const SemanticProblem& p) {
  Plan P{p, {}, {}, {}, {}, {}, {}, false, prefer_upscale_order(p), false, Kernels{}};
  for (int64_t y = 0; y < p.ih; ++y) P.ty.push_back(linear_taps(y, p.h, p.H));
  for (int64_t y = 0; y < p.oh; ++y) P.ry.push_back(linear_taps(y, p.ih, p.oh));
  for (int64_t x = 0; x < p.ow; ++x) P.rx.push_back(linear_taps(x, p.iw, p.ow));
  if (P.upscale) {
    for (int64_t x = 0; x < p.iw; ++x) P.cols.push_back(static_cast<int32_t>(x));
  } else {
    std::vector<char> used(p.iw, 0);
    for (const Taps& t : P.rx) used[t.i0] = 1, used[t.i1] |= t.w1 != 0.f;
    for (int64_t x = 0; x < p.iw; ++x)
      if (used[x]) P.cols.push_back(static_cast<int32_t>(x));
    std::vector<int32_t> where(p.iw, 0);
    for (size_t k = 0; k < P.cols.size(); ++k) where[P.cols[k]] = static_cast<int32_t>(k);
    P.identity_cols = static_cast<int64_t>(P.cols.size()) == p.ow;
    for (int64_t x = 0; x < p.ow; ++x) {
      const Taps& t = P.rx[x];
      Taps u = t;
      u.i0 = where[t.i0], u.i1 = t.w1 != 0.f ? where[t.i1] : u.i0;
      P.identity_cols = P.identity_cols && u.i0 == x && t.w1 == 0.f && t.w0 == 1.f;
      P.out_taps.push_back(u);
    }
  }
  for (int32_t x : P.cols) P.col_taps.push_back(linear_taps(x, p.w, p.W));
  return P;
}

// Per-thread scratch. `hz` caches, for four low-resolution rows (slot = row % 4), the
// horizontal pass of every query's upsample at the evaluated columns.
struct Scratch {
  std::vector<float> hz, V, S, best, rest, lower, full;
  std::vector<int32_t> active, skipped;
  int64_t hz_tag[4] = {-1, -1, -1, -1};  // b * h + row held by each slot
  std::vector<int32_t> arg;
};

const float* hz_rows(const Plan& P, const float* logits_b, int64_t b, int64_t row, Scratch& s) {
  const SemanticProblem& p = P.p;
  const int64_t n = static_cast<int64_t>(P.cols.size()), slot = row % 4;
  s.hz.resize(4 * p.Q * n);
  float* out = s.hz.data() + slot * p.Q * n;
  if (s.hz_tag[slot] != b * p.h + row) {
    for (int64_t q = 0; q < p.Q; ++q) P.k.hz(logits_b + (q * p.h + row) * p.w, P.col_taps.data(), n, out + q * n);
    s.hz_tag[slot] = b * p.h + row;
  }
  return out;
}

// V[q][k] = sum over the (row, weight) pairs of weight * sigmoid(mask q at padded row, cols[k]).
void sigmoid_rows(const Plan& P, const float* logits_b, int64_t b, const int64_t* ys, const float* wts, int n_rows,
                  Scratch& s, float* V, int64_t vs) {
  const SemanticProblem& p = P.p;
  const int64_t n = static_cast<int64_t>(P.cols.size());
  for (int r = 0; r < n_rows; ++r) {
    const Taps& t = P.ty[ys[r]];
    const float* h0 = hz_rows(P, logits_b, b, t.i0, s);
    const float* h1 = hz_rows(P, logits_b, b, t.i1, s);
    for (int64_t q = 0; q < p.Q; ++q) P.k.sig(h0 + q * n, h1 + q * n, t.w0, t.w1, wts[r], r > 0, n, V + q * vs);
  }
}

// Downscale/identity order: one output row.
void fused_row(const Plan& P, const Batch& in, int64_t oy, int32_t* labels, float* scores, Scratch& s) {
  const SemanticProblem& p = P.p;
  const Taps& r = P.ry[oy];
  const int64_t ys[2] = {r.i0, r.i1};
  const float wts[2] = {r.w0, r.w1};
  const int n_rows = r.w1 != 0.f ? 2 : 1;
  const int64_t n = static_cast<int64_t>(P.cols.size()), ss = padded(std::max(n, p.ow));
  s.S.resize(p.Q * ss);
  for (int64_t q = 0; q < p.Q; ++q) std::fill(s.S.data() + q * ss + p.ow, s.S.data() + (q + 1) * ss, 0.f);
  if (P.identity_cols) {
    sigmoid_rows(P, in.logits, in.b, ys, wts, n_rows, s, s.S.data(), ss);
  } else {
    s.V.resize(p.Q * n);
    sigmoid_rows(P, in.logits, in.b, ys, wts, n_rows, s, s.V.data(), n);
    for (int64_t q = 0; q < p.Q; ++q) P.k.gather(s.V.data() + q * n, P.out_taps.data(), p.ow, s.S.data() + q * ss);
  }
  int32_t* lrow = labels + (in.b * p.oh + oy) * p.ow;
  if (!scores && P.bounded) {
    s.active.resize(p.Q), s.skipped.resize(p.Q), s.rest.resize(p.K), s.lower.resize(p.K * kTile);
    s.full.resize(p.K);
    const BoundedLabels a{s.S.data(),      ss,          in.Pt,         in.probs,       in.totals,
                          p.Q,             p.K,         p.ow,          in.cal,         kSkipBelow,
                          lrow,            s.active.data(), s.skipped.data(), s.rest.data(), s.lower.data(),
                          s.full.data()};
    P.k.bounded(a);
    return;
  }
  const int64_t plane = p.oh * p.ow;
  float* srow = scores ? scores + in.b * p.K * plane + oy * p.ow : nullptr;
  P.k.product(s.S.data(), ss, in.Pt, p.Q, p.K, p.ow, in.cal, srow, plane, lrow);
}

// Upscale order: image-resolution score rows, two cached per thread.
class ScoreRows {
 public:
  ScoreRows(const Plan& P, const Batch& in, Scratch& s) : P_(P), in_(in), s_(s), stride_(padded(P.p.iw)) {
    for (auto& slot : slots_) slot.assign(P.p.K * stride_, 0.f);
  }
  int64_t stride() const { return stride_; }
  const float* get(int64_t y, int64_t keep) {
    for (int i = 0; i < 2; ++i)
      if (rows_[i] == y) return slots_[i].data();
    const int i = rows_[0] == keep ? 1 : 0;
    const float one = 1.f;
    s_.S.resize(P_.p.Q * stride_);
    for (int64_t q = 0; q < P_.p.Q; ++q)
      std::fill(s_.S.data() + q * stride_ + P_.p.iw, s_.S.data() + (q + 1) * stride_, 0.f);
    sigmoid_rows(P_, in_.logits, in_.b, &y, &one, 1, s_, s_.S.data(), stride_);
    P_.k.product(s_.S.data(), stride_, in_.Pt, P_.p.Q, P_.p.K, P_.p.iw, nullptr, slots_[i].data(), stride_, nullptr);
    rows_[i] = y;
    return slots_[i].data();
  }

 private:
  const Plan& P_;
  const Batch& in_;
  Scratch& s_;
  int64_t stride_;
  std::vector<float> slots_[2];
  int64_t rows_[2] = {-1, -1};
};

void upscale_rows(const Plan& P, const Batch& in, int64_t oy0, int64_t oy1, int32_t* labels, float* scores,
                  Scratch& s) {
  const SemanticProblem& p = P.p;
  ScoreRows rows(P, in, s);
  s.best.resize(p.ow);
  s.V.resize(p.iw);
  const int64_t plane = p.oh * p.ow;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    const Taps& r = P.ry[oy];
    const float* A = rows.get(r.i0, r.i1);
    const float* B = r.w1 != 0.f ? rows.get(r.i1, r.i0) : A;
    float* srow = scores ? scores + in.b * p.K * plane + oy * p.ow : nullptr;
    P.k.resize_row(A, B, r.w0, r.w1, rows.stride(), p.K, p.iw, P.rx.data(), p.ow, in.cal, srow, plane, s.V.data(),
                   s.best.data(), labels + (in.b * p.oh + oy) * p.ow);
  }
}

}  // namespace

void semantic_cpu(const SemanticProblem& p, const float* logits, const float* probs, const float* cal_offsets,
                  int32_t* labels, float* scores) {
  Plan P = make_plan(p);
  std::vector<float> Pt(p.B * p.K * p.Q), totals(p.B * p.K, 0.f);  // probabilities as [B][K][Q], sums over q
  bool nonnegative = true;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t q = 0; q < p.Q; ++q)
      for (int64_t c = 0; c < p.K; ++c) {
        const float v = probs[(b * p.Q + q) * p.K + c];
        Pt[(b * p.K + c) * p.Q + q] = v;
        totals[b * p.K + c] += v;
        nonnegative = nonnegative && v >= 0.f;
      }
  P.bounded = nonnegative;
  const int threads = resolve_threads(p.threads);
  std::vector<Scratch> scratch(threads);
  const int64_t chunks_per_b = (p.oh + kRowsPerChunk - 1) / kRowsPerChunk;
  parallel_chunks(p.B * chunks_per_b, 1, threads, [&](int tid, int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks_per_b, oy0 = task % chunks_per_b * kRowsPerChunk;
      const int64_t oy1 = std::min(p.oh, oy0 + kRowsPerChunk);
      const Batch in{b, logits + b * p.Q * p.h * p.w, probs + b * p.Q * p.K, Pt.data() + b * p.K * p.Q,
                     totals.data() + b * p.K, cal_offsets};
      if (P.upscale) {
        upscale_rows(P, in, oy0, oy1, labels, scores, scratch[tid]);
      } else {
        for (int64_t oy = oy0; oy < oy1; ++oy) fused_row(P, in, oy, labels, scores, scratch[tid]);
      }
    }
  });
}

}  // namespace zk
