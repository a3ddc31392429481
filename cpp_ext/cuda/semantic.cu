// semantic_inference on the GPU: one thread per output pixel. Each thread resizes the
// sigmoid of every query's mask to its pixel (kept in shared memory, one column per
// thread), then accumulates the class scores eight classes at a time and keeps the argmax.
#include <cmath>

#include "common.cuh"
#include "cuda_api.h"
#include "zk/resample.h"
#include "zk/sigmoid.h"

namespace zk::cuda {
namespace {

constexpr int kClassGroup = 8;

// Sigmoid mask of one query at image column x, blended over the output row's two rows.
__device__ __forceinline__ float column_value(const SemanticProblem& p, const float* L, const Taps& ry, int64_t x) {
  const Taps tx = linear_taps(x, p.w, p.W);
  const float va = ry.w0 * sigmoid(bilinear_at(L, p.w, linear_taps(ry.i0, p.h, p.H), tx));
  if (ry.w1 == 0.f) return va;
  return va + ry.w1 * sigmoid(bilinear_at(L, p.w, linear_taps(ry.i1, p.h, p.H), tx));
}

__global__ void semantic_kernel(SemanticProblem p, const float* __restrict__ logits, const float* __restrict__ probs,
                                const float* __restrict__ cal, int32_t* __restrict__ labels,
                                float* __restrict__ scores) {
  extern __shared__ float sig[];  // [Q][blockDim.x], column threadIdx.x private to this thread
  const int t = threadIdx.x, bd = blockDim.x;
  const int64_t ox = blockIdx.x * static_cast<int64_t>(bd) + t;
  if (ox >= p.ow) return;
  const Taps rx = linear_taps(ox, p.iw, p.ow);
  for (int64_t row = blockIdx.y; row < p.B * p.oh; row += gridDim.y) {
    const int64_t b = row / p.oh, oy = row % p.oh;
    const Taps ry = linear_taps(oy, p.ih, p.oh);
    const float* Lb = logits + b * p.Q * p.h * p.w;
    for (int64_t q = 0; q < p.Q; ++q) {
      const float* L = Lb + q * p.h * p.w;
      const float v0 = column_value(p, L, ry, rx.i0);
      sig[q * bd + t] = rx.w1 != 0.f ? blend2(v0, rx.w0, column_value(p, L, ry, rx.i1), rx.w1) : rx.w0 * v0;
    }
    const float* P = probs + b * p.Q * p.K;
    float best = -INFINITY;
    int32_t arg = 0;
    for (int64_t c0 = 0; c0 < p.K; c0 += kClassGroup) {
      const int nc = static_cast<int>(min(static_cast<int64_t>(kClassGroup), p.K - c0));
      float acc[kClassGroup];
#pragma unroll
      for (int j = 0; j < kClassGroup; ++j) acc[j] = 0.f;
      for (int64_t q = 0; q < p.Q; ++q) {
        const float s = sig[q * bd + t];
        const float* pr = P + q * p.K + c0;
#pragma unroll
        for (int j = 0; j < kClassGroup; ++j)
          if (j < nc) acc[j] = fmaf(__ldg(pr + j), s, acc[j]);
      }
#pragma unroll
      for (int j = 0; j < kClassGroup; ++j) {
        if (j >= nc) break;
        const int64_t c = c0 + j;
        const float v = acc[j] - (cal ? cal[c] : 0.f);
        if (scores) scores[((b * p.K + c) * p.oh + oy) * p.ow + ox] = v;
        if (v > best) best = v, arg = static_cast<int32_t>(c);  // first maximum wins, like torch.argmax
      }
    }
    labels[(b * p.oh + oy) * p.ow + ox] = arg;
  }
}

// Threads per block so that the [Q][threads] shared buffer fits; opts in above 48 KiB.
int block_threads(const SemanticProblem& p) {
  int device = 0, optin = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
  for (int threads : {64, 32}) {
    const int64_t bytes = p.Q * threads * static_cast<int64_t>(sizeof(float));
    if (bytes <= 48 * 1024) return threads;
    if (bytes <= optin) {
      check(cudaFuncSetAttribute(semantic_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
            "cudaFuncSetAttribute");
      return threads;
    }
  }
  throw std::invalid_argument("semantic_inference on the GPU supports at most " + std::to_string(optin / 128) +
                              " queries on this device, got " + std::to_string(p.Q));
}

}  // namespace

void semantic(const SemanticProblem& p, const float* logits, const float* probs, const float* cal_offsets,
              int32_t* labels, float* scores, intptr_t stream) {
  const cudaStream_t s = to_stream(stream);
  const int threads = block_threads(p);
  StreamBuffer cal(p.K * sizeof(float), s);
  if (cal_offsets)
    check(cudaMemcpyAsync(cal.get<float>(), cal_offsets, p.K * sizeof(float), cudaMemcpyHostToDevice, s),
          "cudaMemcpyAsync");
  const int64_t rows = p.B * p.oh;
  const dim3 grid(static_cast<unsigned>((p.ow + threads - 1) / threads),
                  static_cast<unsigned>(rows < 65535 ? rows : 65535));
  const size_t shared = static_cast<size_t>(p.Q) * threads * sizeof(float);
  semantic_kernel<<<grid, threads, shared, s>>>(p, logits, probs, cal_offsets ? cal.get<float>() : nullptr, labels,
                                                scores);
  check_launch("semantic_inference");
}

}  // namespace zk::cuda
