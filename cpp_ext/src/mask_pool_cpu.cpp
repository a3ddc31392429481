// mask_pool on the CPU: per query, the mask-weighted average of a dense feature map.
#include <algorithm>
#include <vector>

#include "zk/ops.h"
#include "zk/parallel.h"
#include "zk/resample.h"
#include "zk/sigmoid.h"
#include "zk/simd.h"

namespace zk {
namespace {

constexpr int64_t kQueryBlock = 4;  // queries sharing one pass over a feature channel

// out[j] = dot(weights[j], f) for the kQueryBlock weight rows (8 partial sums each).
template <bool Fma>
ZK_ALWAYS_INLINE void dot_block_impl(const float* f, const float* weights, int64_t n, float* out) {
  float acc[kQueryBlock][8] = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int64_t j = 0; j < kQueryBlock; ++j)
      for (int l = 0; l < 8; ++l) acc[j][l] = mac<Fma>(weights[j * n + k + l], f[k + l], acc[j][l]);
  for (; k < n; ++k)
    for (int64_t j = 0; j < kQueryBlock; ++j) acc[j][0] = mac<Fma>(weights[j * n + k], f[k], acc[j][0]);
  for (int64_t j = 0; j < kQueryBlock; ++j) {
    float s = 0.f;
    for (int l = 0; l < 8; ++l) s += acc[j][l];
    out[j] = s;
  }
}
ZK_VARIANTS(dot_block, (const float* f, const float* weights, int64_t n, float* out), (f, weights, n, out))

// Mask weights of one query at feature resolution; returns their sum.
double query_weights(const PoolProblem& p, const float* L, const std::vector<Taps>& ty, const std::vector<Taps>& tx,
                     float* w) {
  double sum = 0.0;
  for (int64_t y = 0; y < p.hf; ++y)
    for (int64_t x = 0; x < p.wf; ++x) {
      const float v = bilinear_at(L, p.wm, ty[y], tx[x]);
      const float wt = p.hard ? (v >= p.threshold ? 1.f : 0.f) : sigmoid(v);
      w[y * p.wf + x] = wt;
      sum += wt;
    }
  return sum;
}

}  // namespace

void mask_pool_cpu(const PoolProblem& p, const float* features, const float* logits, float* pooled) {
  std::vector<Taps> ty(p.hf), tx(p.wf);
  for (int64_t y = 0; y < p.hf; ++y) ty[y] = linear_taps(y, p.hm, p.hf);
  for (int64_t x = 0; x < p.wf; ++x) tx[x] = linear_taps(x, p.wm, p.wf);
  const int64_t n = p.hf * p.wf, blocks = (p.Q + kQueryBlock - 1) / kQueryBlock;
  const dot_block_fn dot = dot_block_pick();
  const int threads = resolve_threads(p.threads);
  parallel_chunks(p.B * blocks, 1, threads, [&](int, int64_t begin, int64_t end) {
    std::vector<float> w(kQueryBlock * n, 0.f);
    float dots[kQueryBlock], norm[kQueryBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, q0 = task % blocks * kQueryBlock;
      const int64_t nq = std::min(kQueryBlock, p.Q - q0);
      std::fill(w.begin(), w.end(), 0.f);
      for (int64_t j = 0; j < nq; ++j) {
        const double sum = query_weights(p, logits + ((b * p.Q) + q0 + j) * p.hm * p.wm, ty, tx, w.data() + j * n);
        norm[j] = sum > 0.0 ? static_cast<float>(sum) : 0.f;  // empty mask: zeros
      }
      const float* F = features + b * p.C * n;
      for (int64_t c = 0; c < p.C; ++c) {
        dot(F + c * n, w.data(), n, dots);
        for (int64_t j = 0; j < nq; ++j) pooled[((b * p.Q) + q0 + j) * p.C + c] = norm[j] > 0.f ? dots[j] / norm[j] : 0.f;
      }
    }
  });
}

}  // namespace zk
