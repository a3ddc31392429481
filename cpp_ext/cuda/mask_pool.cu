// mask_pool on the GPU: mask weights per query at feature resolution, then one warp per
// (query, channel) dot product.
#include "common.cuh"
#include "cuda_api.h"
#include "zk/resample.h"
#include "zk/sigmoid.h"

namespace zk::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void weights_kernel(PoolProblem p, const float* __restrict__ logits, float* __restrict__ weights,
                               float* __restrict__ sums) {
  const int64_t item = blockIdx.x, n = p.hf * p.wf;
  const float* L = logits + item * p.hm * p.wm;
  float* w = weights + item * n;
  float local = 0.f;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const float v = bilinear_at(L, p.wm, linear_taps(k / p.wf, p.hm, p.hf), linear_taps(k % p.wf, p.wm, p.wf));
    const float wt = p.hard ? (v >= p.threshold ? 1.f : 0.f) : sigmoid(v);
    w[k] = wt;
    local += wt;
  }
  __shared__ float partial[kThreads];
  partial[threadIdx.x] = local;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) sums[item] = partial[0];
}

__global__ void pool_kernel(PoolProblem p, const float* __restrict__ features, const float* __restrict__ weights,
                            const float* __restrict__ sums, float* __restrict__ pooled) {
  const int64_t item = blockIdx.x, n = p.hf * p.wf;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const float* w = weights + item * n;
  const float norm = sums[item];
  for (int64_t c = warp; c < p.C; c += warps) {
    const float* f = features + (item / p.Q * p.C + c) * n;
    float acc = 0.f;
    for (int64_t k = lane; k < n; k += 32) acc = fmaf(w[k], f[k], acc);
    for (int off = 16; off > 0; off /= 2) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) pooled[item * p.C + c] = norm > 0.f ? acc / norm : 0.f;  // empty mask: zeros
  }
}

}  // namespace

void mask_pool(const PoolProblem& p, const float* features, const float* logits, float* pooled, intptr_t stream) {
  const cudaStream_t s = to_stream(stream);
  const int64_t items = p.B * p.Q;
  StreamBuffer weights(items * p.hf * p.wf * sizeof(float), s);
  StreamBuffer sums(items * sizeof(float), s);
  weights_kernel<<<static_cast<unsigned>(items), kThreads, 0, s>>>(p, logits, weights.get<float>(), sums.get<float>());
  check_launch("mask_pool (weights)");
  pool_kernel<<<static_cast<unsigned>(items), kThreads, 0, s>>>(p, features, weights.get<float>(), sums.get<float>(),
                                                                pooled);
  check_launch("mask_pool (pool)");
}

}  // namespace zk::cuda
