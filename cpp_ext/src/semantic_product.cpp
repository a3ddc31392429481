// Dense and bounded class products of semantic_inference (see semantic_product.h).
#include "semantic_product.h"

#include <algorithm>
#include <cmath>

#include "zk/cpu_isa.h"
#include "zk/simd.h"

namespace zk {
namespace {

// Scores of class c for one tile (minus its calibration), stored if asked, and the
// running argmax: first maximum wins, like torch.argmax.
template <int W>
ZK_ALWAYS_INLINE void finish_class(const Vf<W>* acc, int64_t c, const float* cal, float* scores, int64_t plane,
                                   int64_t x0, int64_t nv, Vf<W>* best, Vi<W>* arg) {
  const float off = cal ? cal[c] : 0.f;
  float* out = scores ? scores + c * plane + x0 : nullptr;
  for (int v = 0; v < kTile / W; ++v) {
    const Vf<W> val = acc[v] - off;
    if (out) {
      if (nv == kTile) store<W>(out + v * W, val);
      else
        for (int l = 0; l < W && v * W + l < nv; ++l) out[v * W + l] = val[l];
    }
    const Vi<W> better = val > best[v];
    best[v] = better ? val : best[v];
    arg[v] = better ? (Vi<W>{} + static_cast<int32_t>(c)) : arg[v];
  }
}

// scores[c][x] = sum_q Pt[c][q] * S[q][x] - cal[c] for x < n and labels[x] = argmax_c
// (first maximum wins, like torch.argmax). S rows have stride ss >= padded(n) with a zero
// tail; scores/labels may be null. W floats per vector, G classes per pass over Q.
template <int W, int G>
ZK_ALWAYS_INLINE void product_impl(const float* S, int64_t ss, const float* Pt, int64_t Q, int64_t K, int64_t n,
                                   const float* cal, float* scores, int64_t plane, int32_t* labels) {
  constexpr int NV = kTile / W;
  for (int64_t x0 = 0; x0 < n; x0 += kTile) {
    const int64_t nv = std::min(kTile, n - x0);
    Vf<W> best[NV];
    Vi<W> arg[NV];
    for (int v = 0; v < NV; ++v) best[v] = Vf<W>{} - INFINITY, arg[v] = Vi<W>{};
    int64_t c = 0;
    for (; c + G <= K; c += G) {
      Vf<W> acc[G][NV] = {};
      for (int64_t q = 0; q < Q; ++q) {
        const float* s = S + q * ss + x0;
        float pj[G];
        for (int j = 0; j < G; ++j) pj[j] = Pt[(c + j) * Q + q];
        for (int v = 0; v < NV; ++v) {
          const Vf<W> sv = load<W>(s + v * W);
          for (int j = 0; j < G; ++j) acc[j][v] = acc[j][v] + pj[j] * sv;
        }
      }
      for (int j = 0; j < G; ++j) finish_class<W>(acc[j], c + j, cal, scores, plane, x0, nv, best, arg);
    }
    for (; c < K; ++c) {
      Vf<W> acc[NV] = {};
      for (int64_t q = 0; q < Q; ++q) {
        const float pj = Pt[c * Q + q];
        for (int v = 0; v < NV; ++v) acc[v] = acc[v] + pj * load<W>(S + q * ss + x0 + v * W);
      }
      finish_class<W>(acc, c, cal, scores, plane, x0, nv, best, arg);
    }
    if (labels)
      for (int64_t l = 0; l < nv; ++l) labels[x0 + l] = arg[l / W][l % W];
  }
}

// ---- bounded (labels only) ----

template <int W>
ZK_ALWAYS_INLINE float tile_max(const float* s) {
  Vf<W> m = load<W>(s);
  for (int v = 1; v < kTile / W; ++v) {
    const Vf<W> x = load<W>(s + v * W);
    m = x > m ? x : m;
  }
  float r = m[0];
  for (int l = 1; l < W; ++l) r = std::max(r, m[l]);
  return r;
}

// Running bounds over the classes of a tile: best lower bound (first maximum) and the two
// largest upper bounds with the index of the largest; each class's lower bounds are kept.
template <int W>
struct Bounds {
  Vf<W> best[kTile / W], up1[kTile / W], up2[kTile / W];
  Vi<W> arg[kTile / W], arg_up1[kTile / W];

  ZK_ALWAYS_INLINE void reset() {
    for (int v = 0; v < kTile / W; ++v) {
      best[v] = up1[v] = up2[v] = Vf<W>{} - INFINITY;
      arg[v] = Vi<W>{}, arg_up1[v] = Vi<W>{} - 1;
    }
  }
  ZK_ALWAYS_INLINE void add(const Vf<W>* acc, int64_t c, float off, float rest, const Vf<W>* slack, float* lower) {
    const Vi<W> cv = Vi<W>{} + static_cast<int32_t>(c);
    for (int v = 0; v < kTile / W; ++v) {
      const Vf<W> lo = acc[v] - off;
      store<W>(lower + v * W, lo);
      const Vf<W> hi = lo + slack[v] * rest;
      const Vi<W> better = lo > best[v];
      best[v] = better ? lo : best[v];
      arg[v] = better ? cv : arg[v];
      const Vi<W> top = hi > up1[v];
      up2[v] = top ? up1[v] : (hi > up2[v] ? hi : up2[v]);
      up1[v] = top ? hi : up1[v];
      arg_up1[v] = top ? cv : arg_up1[v];
    }
  }
  ZK_ALWAYS_INLINE bool decided(int l) const {
    const int v = l / W, i = l % W;
    const float other = arg_up1[v][i] != arg[v][i] ? up1[v][i] : up2[v][i];
    return best[v][i] > other;
  }
};

// An undecided pixel: its lower bounds plus the skipped queries, then the argmax.
template <bool Fma>
ZK_ALWAYS_INLINE int32_t complete_label(const BoundedLabels& a, const int32_t* skipped, int64_t ns, int64_t x0,
                                        int64_t l) {
  for (int64_t c = 0; c < a.K; ++c) a.full[c] = a.lower[c * kTile + l];
  for (int64_t i = 0; i < ns; ++i) {
    const float s = a.S[skipped[i] * a.ss + x0 + l];
    const float* p = a.P + skipped[i] * a.K;
    for (int64_t c = 0; c < a.K; ++c) a.full[c] = mac<Fma>(p[c], s, a.full[c]);
  }
  int32_t arg = 0;
  float best = a.full[0];
  for (int64_t c = 1; c < a.K; ++c)
    if (a.full[c] > best) best = a.full[c], arg = static_cast<int32_t>(c);
  return arg;
}

// Splits the queries of one tile into active ones (sigmoid above tau somewhere) and skipped
// ones; slack[pixel] = the largest skipped sigmoid. Returns the number of active queries.
template <int W>
ZK_ALWAYS_INLINE int64_t split_queries(const BoundedLabels& a, int64_t x0, Vf<W>* slack) {
  int64_t na = 0, ns = 0;
  for (int v = 0; v < kTile / W; ++v) slack[v] = Vf<W>{};
  for (int64_t q = 0; q < a.Q; ++q) {
    const float* s = a.S + q * a.ss + x0;
    if (tile_max<W>(s) > a.tau) {
      a.active[na++] = static_cast<int32_t>(q);
      continue;
    }
    a.skipped[ns++] = static_cast<int32_t>(q);
    for (int v = 0; v < kTile / W; ++v) {
      const Vf<W> x = load<W>(s + v * W);
      slack[v] = x > slack[v] ? x : slack[v];
    }
  }
  return na;
}

template <int W, int G>
ZK_ALWAYS_INLINE void bounded_labels_impl(const BoundedLabels& a) {
  constexpr int NV = kTile / W;
  Bounds<W> bounds;
  for (int64_t x0 = 0; x0 < a.n; x0 += kTile) {
    const int64_t nv = std::min(kTile, a.n - x0);
    Vf<W> slack[NV];
    const int64_t na = split_queries<W>(a, x0, slack), ns = a.Q - na;
    if (2 * na > a.Q) {  // mostly active: the plain product is cheaper
      product_impl<W, G>(a.S + x0, a.ss, a.Pt, a.Q, a.K, nv, a.cal, nullptr, 0, a.labels + x0);
      continue;
    }
    std::copy(a.totals, a.totals + a.K, a.rest);
    for (int64_t i = 0; i < na; ++i) {
      const float* p = a.P + a.active[i] * a.K;
      for (int64_t c = 0; c < a.K; ++c) a.rest[c] -= p[c];
    }
    for (int64_t c = 0; c < a.K; ++c)
      a.rest[c] = std::max(a.rest[c], 0.f) + 1e-6f * a.totals[c];  // margin over the rounding of the difference
    bounds.reset();
    int64_t c = 0;
    for (; c + G <= a.K; c += G) {
      Vf<W> acc[G][NV] = {};
      for (int64_t i = 0; i < na; ++i) {
        const int64_t q = a.active[i];
        const float* s = a.S + q * a.ss + x0;
        float pj[G];
        for (int j = 0; j < G; ++j) pj[j] = a.Pt[(c + j) * a.Q + q];
        for (int v = 0; v < NV; ++v) {
          const Vf<W> sv = load<W>(s + v * W);
          for (int j = 0; j < G; ++j) acc[j][v] = acc[j][v] + pj[j] * sv;
        }
      }
      for (int j = 0; j < G; ++j)
        bounds.add(acc[j], c + j, a.cal ? a.cal[c + j] : 0.f, a.rest[c + j], slack, a.lower + (c + j) * kTile);
    }
    for (; c < a.K; ++c) {
      Vf<W> acc[NV] = {};
      for (int64_t i = 0; i < na; ++i) {
        const int64_t q = a.active[i];
        const float pj = a.Pt[c * a.Q + q];
        for (int v = 0; v < NV; ++v) acc[v] = acc[v] + pj * load<W>(a.S + q * a.ss + x0 + v * W);
      }
      bounds.add(acc, c, a.cal ? a.cal[c] : 0.f, a.rest[c], slack, a.lower + c * kTile);
    }
    for (int64_t l = 0; l < nv; ++l)
      a.labels[x0 + l] = bounds.decided(static_cast<int>(l)) ? bounds.arg[l / W][l % W]
                                                             : complete_label<(W > 4)>(a, a.skipped, ns, x0, l);
  }
}

}  // namespace

#define ZK_PRODUCT_PARAMS                                                                                  \
  (const float* S, int64_t ss, const float* Pt, int64_t Q, int64_t K, int64_t n, const float* cal, float* scores, \
   int64_t plane, int32_t* labels)
#define ZK_PRODUCT_ARGS (S, ss, Pt, Q, K, n, cal, scores, plane, labels)
namespace {
void product_generic ZK_PRODUCT_PARAMS { product_impl<4, 1> ZK_PRODUCT_ARGS; }
ZK_FUSED_AVX2 void product_avx2 ZK_PRODUCT_PARAMS { product_impl<8, 2> ZK_PRODUCT_ARGS; }
ZK_FUSED_AVX512 void product_avx512 ZK_PRODUCT_PARAMS { product_impl<16, 4> ZK_PRODUCT_ARGS; }
void bounded_generic(const BoundedLabels& a) { bounded_labels_impl<4, 1>(a); }
ZK_FUSED_AVX2 void bounded_avx2(const BoundedLabels& a) { bounded_labels_impl<8, 2>(a); }
ZK_FUSED_AVX512 void bounded_avx512(const BoundedLabels& a) { bounded_labels_impl<16, 4>(a); }
}  // namespace

product_fn product_pick() {
  switch (cpu_isa()) {
    case Isa::avx512: return product_avx512;
    case Isa::avx2: return product_avx2;
    default: return product_generic;
  }
}

bounded_labels_fn bounded_labels_pick() {
  switch (cpu_isa()) {
    case Isa::avx512: return bounded_avx512;
    case Isa::avx2: return bounded_avx2;
    default: return bounded_generic;
  }
}

}  // namespace zk
